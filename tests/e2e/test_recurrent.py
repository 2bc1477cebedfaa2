"""Recurrent models with state inputs (real models, part 2): a fixed batch of 1, and the batch on axis 1 with
a scalar input. Both run Step 1, analyze and AMP from the CLI and from the Python API, with a user metric
that carries the state from call to call; the exported QDQ models reproduce the simulation's metric."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import sweeper
from sweeper.examples import recurrent
from sweeper.model.session import reference_session

pytestmark = pytest.mark.e2e
KINDS = {
    "vad_fixed": ("vad_fixed", "calibration_fixed", "evaluation_fixed", "vad_accuracy"),
    "vad_axis1": ("vad_axis1", "calibration_axis1", "evaluation_axis1", "vad_accuracy_sr"),
}
CANDIDATES = ["w8a8", "w8a16", "w16a16", "fp16", "w4a8", "w4a4"]


def _yaml(tmp: Path, kind: str) -> Path:
    model, cal, ev, metric = KINDS[kind]
    mod = "sweeper.examples.recurrent"
    path = tmp / f"{kind}.yaml"
    path.write_text(f"name: {kind}\nmodel:\n  onnx: {mod}:{model}\ndata:\n  calibration: {mod}:{cal}\n"
                    f"  evaluation: {mod}:{ev}\nmetric: {mod}:{metric}\ntarget:\n  max_drop: 0.01\n"
                    f"candidates: [{', '.join(CANDIDATES)}]\nworkers: 2\npool: local\noutput: out\n")
    return path


def _cli(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([sys.executable, "-m", "sweeper", *args, "--no-tracking"], cwd=tmp,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _exported_metric(onnx_path: str, kind: str) -> float:
    """The user metric run on the exported QDQ model in plain ONNX Runtime (the session options it names: sim = export)."""
    _, _, ev, metric = KINDS[kind]
    session = reference_session(onnx_path)
    run = lambda feeds: session.run(None, feeds)  # noqa: E731
    return getattr(recurrent, metric)(run, getattr(recurrent, ev)())


def _is_the_cheapest_lossless_profile(amp: dict, fp32_metric: float) -> None:
    """AMP's answer on the detector: every candidate keeps the FP32 accuracy (the recurrent weights stay float),
    so AMP accepts the cheapest profile it can build, every group at w4a4 (a quarter of w8a8's BOPs), at the
    FP32 metric; nothing it evaluated is cheaper."""
    acc = amp["accepted"]
    assert acc["profile"] == "w4a4" and set(acc["assignment"].values()) == {"w4a4"} and not acc["mixed"]
    assert acc["metric"] == fp32_metric == 1.0 and acc["drop"] == 0.0 <= amp["max_drop"]
    assert acc["bops_ratio"] == acc["cost"] == 0.25
    assert acc["cost"] == min(e["cost"] for e in amp["all"]) and amp["cheapest_passing_uniform"] == "uniform:w4a4"


@pytest.mark.parametrize("kind", list(KINDS))
def test_cli_runs_every_step_on_a_stateful_model(tmp_path: Path, kind: str) -> None:
    exp = _yaml(tmp_path, kind)
    _cli(tmp_path, "baseline", str(exp))
    doc = json.loads((tmp_path / "out" / "baseline" / "results.json").read_text())
    rows = {r["name"]: r for r in doc["results"]}
    assert set(rows) == set(CANDIDATES)
    assert doc["fp32_metric"] > 0.9  # the model learned the task; the loop carried the state
    assert {e["op"] for e in doc["left_float"]} == {"GRU"}  # recurrent weights stay float, and say so
    for name in ("w8a8", "w16a16", "w4a4"):  # the exported model is what was simulated
        assert _exported_metric(rows[name]["onnx"], kind) == rows[name]["metric"], name
    _cli(tmp_path, "analyze", str(exp), "--base", "w4a4")
    sens = json.loads((tmp_path / "out" / "analyze" / "sensitivity.json").read_text())
    assert len(sens["groups"]) >= 3 and all(0.0 <= g["enable_one"] <= 1.0 for g in sens["groups"])
    _cli(tmp_path, "amp", str(exp), "--candidates", "w4a4,w4a8,w8a8,fp16")
    amp = json.loads((tmp_path / "out" / "amp" / "results.json").read_text())
    _is_the_cheapest_lossless_profile(amp, doc["fp32_metric"])
    assert doc["chosen"] == "w4a4"  # Step 1's pick: the same profile
    assert _exported_metric(amp["accepted"]["onnx"], kind) == amp["accepted"]["metric"]


def test_python_api_runs_the_steps_on_feeds_and_a_callable_metric(tmp_path: Path) -> None:
    exp = sweeper.experiment(
        "vad_api", model=recurrent.vad_axis1(), calibration=recurrent.calibration_axis1,
        evaluation=recurrent.evaluation_axis1(), metric=recurrent.vad_accuracy_sr, max_drop=0.01,
        candidates=CANDIDATES, output=tmp_path / "out", workers=1)
    with sweeper.Session(exp, tracking=False) as s:
        base = s.baseline()
        assert {r.name for r in base.rows} == set(CANDIDATES) and base.chosen == "w4a4"
        ana = s.analyze(base="w4a4")
        assert ana.doc["groups"] and ana.output == tmp_path / "out" / "analyze"
        amp = s.amp(candidates=["w4a4", "w4a8", "fp16"], measure=False)
        _is_the_cheapest_lossless_profile(amp.doc, base.fp32_metric)
        out = s.export("w8a8", tmp_path / "w8a8.onnx")
        w8a8 = next(r for r in base.rows if r.name == "w8a8")
    assert out.is_file() and out.with_suffix(".encodings").is_file()
    assert _exported_metric(str(out), "vad_axis1") == w8a8.metric
    # the results the API returned are those written to disk
    doc = json.loads((tmp_path / "out" / "baseline" / "results.json").read_text())
    assert {r["name"]: r["metric"] for r in doc["results"]} == {r.name: r.metric for r in base.rows}


def test_a_feed_that_does_not_match_the_model_gets_one_line(tmp_path: Path) -> None:
    import numpy as np

    feeds = recurrent.calibration_fixed()[:3]
    feeds[1] = {**feeds[1], "state": np.zeros((2, 2, 32), np.float32)}  # batch 2 where the model fixes 1
    exp = sweeper.experiment("vad_bad", model=recurrent.vad_fixed(), calibration=feeds,
                             evaluation=recurrent.evaluation_fixed(), metric=recurrent.vad_accuracy,
                             output=tmp_path / "out")
    with pytest.raises(sweeper.SweeperError, match=r"calibration\[1\]: input 'state' has shape \(2, 2, 32\): "
                                                   r"the model expects \(2, 1, 32\)"):
        sweeper.Session(exp, tracking=False)
