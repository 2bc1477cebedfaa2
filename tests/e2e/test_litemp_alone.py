"""``sweeper litemp`` on its own, with no earlier ``sweeper analyze``: it runs the sensitivity analysis first
and flips the groups in that ranking; ``litemp/results.json`` lists the points in k order, each point's target
flag is what its metric says, the chosen point is the smallest k that meets the target (and every smaller k
misses), and what the command prints says so; when no k meets the target, nothing is chosen and it says so.

The tiny CNN of conftest (3 groups), in process on the local pool, no MLflow: about a second each."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from conftest import cnn_data, cnn_model, write_experiment


def _litemp(tmp: Path, high: str, max_drop: float, capsys: pytest.CaptureFixture[str]
            ) -> tuple[dict[str, Any], str, Path]:
    from sweeper.cli import main

    exp = write_experiment(tmp, cnn_model(), cnn_data(), max_drop=max_drop, candidates="[w8a8, w4a8, w2a8]")
    out = tmp / "out"
    assert not (out / "analyze").exists()
    capsys.readouterr()
    assert main(["litemp", str(exp), "--precision", "w2a8", "--high", high, "--k", "0,33,66,100",
                 "--pool", "local", "--no-tracking"]) == 0
    stdout = capsys.readouterr().out
    return json.loads((out / "litemp" / "results.json").read_text()), stdout, out


def _check_points(doc: dict[str, Any], out: Path) -> list[dict[str, Any]]:
    """The points follow the analysis' ranking, in k order, each target flag as its metric says."""
    analysis = json.loads((out / "analyze" / "sensitivity.json").read_text())  # the analysis ran first
    assert analysis["base"] == "w2a8"
    ranked = [g["name"] for g in analysis["groups"]]
    assert sorted(ranked) == ["conv1", "conv2", "fc"]
    points = doc["points"]
    assert doc["base"] == "w2a8" and doc["ranking"] == analysis["ranking"] == "enable_one"
    ks = [p["k"] for p in points]
    assert ks == sorted(ks) and len(set(ks)) == len(ks) and ks[0] == 0, ks
    for p in points:
        n = len(p["flipped"])
        assert p["flipped"] == ranked[:n], (p["k"], p["flipped"], ranked)  # the top-n of the ranking
        assert n == math.ceil(len(ranked) * p["k"] / 100) or p["k"] == pytest.approx(100 * n / len(ranked))
        assert p["drop"] == pytest.approx(doc["fp32_metric"] - p["metric"], abs=1e-12)
        assert p["meets_target"] == (doc["fp32_metric"] - p["metric"] <= doc["max_drop"] + 1e-12), p
        assert Path(p["onnx"]).is_file() and Path(p["encodings"]).is_file()  # every point is exported
    return points


def test_litemp_alone_meets_the_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # cosine: w2a8 ~0.72, fc at w8a8 ~0.86, fc + conv1 ~0.95, all of it ~1.0; with a max drop of 0.06 the
    # last two pass (so the smallest passing k is not simply the last one tried)
    doc, stdout, out = _litemp(tmp_path, "w8a8", 0.06, capsys)
    points = _check_points(doc, out)
    assert not points[0]["meets_target"]  # k = 0 is w2a8 itself, which misses
    assert sum(p["meets_target"] for p in points) >= 2
    chosen = doc["chosen"]
    assert chosen is not None and chosen["meets_target"] and doc["note"] is None
    smaller = [p for p in points if len(p["flipped"]) < len(chosen["flipped"])]
    assert smaller and not any(p["meets_target"] for p in smaller)  # the smallest k that meets the target
    assert chosen["k"] == min(p["k"] for p in points if p["meets_target"])
    assert f"chosen: k = {chosen['k']:g} % ({len(chosen['flipped'])} groups)" in stdout


def test_litemp_alone_when_no_k_meets_the_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc, stdout, out = _litemp(tmp_path, "w4a8", 0.01, capsys)  # all of it at w4a8 misses (cosine ~0.986)
    points = _check_points(doc, out)
    assert not any(p["meets_target"] for p in points)
    assert points[-1]["k"] == 100 and len(points[-1]["flipped"]) == 3  # tried up to every group
    assert doc["chosen"] is None and "no share of groups at w4a8 meets the target" in doc["note"]
    assert "no share of groups meets the target, up to 100 %" in stdout and "chosen:" not in stdout
