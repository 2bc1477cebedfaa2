"""`sweeper amp --cost latency` on the MNIST example with the cpu_x86 target (ONNX Runtime CPU, 1 thread):
the recommendation never measures slower than the passing uniform w8a8.

Only measured values recorded in results.json are compared, never absolute wall-clock times. They come from
one interleaved measurement (every model once per round, median over the rounds), so load from other
processes falls on all of them alike. The tolerance on the search's own choice is the interquartile range
of the w8a8 runs: two medians of the same model over that many rounds differ by well under one IQR."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sweeper.search.amp.latency import MEASURE_SAMPLES

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def _amp(tmp_path: Path, target: str, *extra: str) -> dict:
    """Run `sweeper amp` on a copy of the MNIST experiment with ``cost.target: target``; its results.json."""
    exp = yaml.safe_load((ROOT / "experiments" / "mnist_cnn.yaml").read_text())
    exp["cost"] = {"target": target}
    path = tmp_path / "mnist_cnn.yaml"
    path.write_text(yaml.safe_dump(exp))
    res = subprocess.run([sys.executable, "-m", "sweeper", "amp", str(path), "--cost", "latency", "--output",
                          str(tmp_path / "out"), *extra], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((tmp_path / "out" / "amp" / "results.json").read_text())


def _check_spread(entry: dict) -> None:
    s = entry["measured_spread"]
    assert s["min"] <= s["q1"] <= entry["measured_ms_per_sample"] <= s["q3"] <= s["max"]
    # measured on the first 32 samples of the first 256-image evaluation batch
    assert s["runs"] >= 7 and s["batch"] == min(256, MEASURE_SAMPLES) == 32


def test_latency_recommendation_not_slower_than_uniform_w8a8(tmp_path: Path) -> None:
    d = _amp(tmp_path, "cpu_x86")
    lat = d["latency"]
    assert lat["unit"] == "ms per sample" and lat["estimate_target"] == "cpu_x86" and lat["estimate_batch"] == 256
    check = lat["check"]
    assert check["applied"]
    uniform = check["passing_uniform_ms_per_sample"]
    assert "uniform:w8a8" in uniform  # w8a8 meets the target on the example
    acc = d["accepted"]
    _check_spread(acc)
    # the recommendation, as measured in the same interleaved run as the uniform candidates
    assert acc["measured_ms_per_sample"] <= uniform["uniform:w8a8"]
    assert acc["measured_ms_per_sample"] <= min(uniform.values())
    # and the estimate itself ranks well: the search's own choice was not slower than w8a8 beyond noise
    spread = check["passing_uniform_spread"]["uniform:w8a8"]
    assert check["search_choice_ms_per_sample"] <= uniform["uniform:w8a8"] + (spread["q3"] - spread["q1"])
    for f in d["pareto_front"]:  # both figures per sample, for every front profile
        assert f["est_ms_per_sample"] > 0
        _check_spread(f)


def test_latency_check_overrides_a_misranking_target(tmp_path: Path) -> None:
    """With a target that ranks 4-bit weights cheapest (the former cpu_x86 roofline), the search picks a
    4-bit profile; it measures slower than w8a8 on ORT CPU, so the check accepts the faster uniform one."""
    (tmp_path / "roofline.yaml").write_text(
        "name: old_roofline\nbandwidth_gbps: 20\noverhead_us_per_layer: 1.0\n"
        "throughput_gmacs: {int4: 100, int8: 100, int16: 50, fp16: 25, fp32: 50}\n")
    d = _amp(tmp_path, "roofline.yaml", "--candidates", "w4a4,w4a8,w8a8")
    check = d["latency"]["check"]
    assert d["latency"]["estimate_target"] == "old_roofline"
    assert "w8a8" != check["search_choice"] and check["search_choice_ms_per_sample"] > min(
        check["passing_uniform_ms_per_sample"].values())
    assert check["replaced"] and "slower than passing uniform" in check["note"]
    acc = d["accepted"]
    assert acc["profile"] == check["fastest_passing_uniform"].split(":", 1)[1]
    assert acc["measured_ms_per_sample"] == check["fastest_passing_uniform_ms_per_sample"]
    assert acc["measured_ms_per_sample"] <= check["passing_uniform_ms_per_sample"]["uniform:w8a8"]
    assert Path(acc["onnx"]).is_file()
