"""`sweeper run` (the README's first command) on the example: the workflow walks the steps and stops at the
right one, prepares once, and evaluates each profile once across steps. The rules' every branch is tested
in tests/search/test_workflow_rules.py; here the branches the example reaches, end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def _run(tmp_path: Path, *extra: str, experiment: Path | None = None) -> subprocess.CompletedProcess[str]:
    exp = experiment or ROOT / "experiments" / "mnist_cnn.yaml"
    res = subprocess.run([sys.executable, "-m", "sweeper", "run", str(exp), "--output", str(tmp_path / "out"),
                          "--no-tracking", "--pool", "local", *extra],
                         cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_run_stops_at_litemp_on_the_example(tmp_path: Path) -> None:
    res = _run(tmp_path)
    out = tmp_path / "out"
    assert "Step 1 - baseline precision" in res.stdout and "Step 2 - LiteMP" in res.stdout
    assert "Step 3" not in res.stdout and "recommended:" in res.stdout
    assert res.stderr.count("preparing mnist_cnn") == 1  # one Workspace for every step
    flow, base, lite = _json(out / "workflow.json"), _json(out / "baseline" / "results.json"), \
        _json(out / "litemp" / "results.json")
    # rule 1: the cheapest candidate (w2a8) misses, so Step 2 runs from it towards Step 1's pick
    assert not next(r for r in base["results"] if r["name"] == "w2a8")["meets_target"]
    assert flow["stopped_at"] == "litemp" and lite["base"] == "w2a8" and lite["high"] == base["chosen"]
    acc = flow["accepted"]
    chosen = next(r for r in base["results"] if r["name"] == base["chosen"])
    assert acc["step"] == "litemp" and acc["drop"] <= 0.005 and acc["bops_ratio"] < chosen["bops_ratio"]
    assert Path(acc["onnx"]).is_file()
    # LiteMP's k = 0 point is uniform w2a8, never evaluated by LiteMP itself: Step 1 stopped it early (it cannot
    # meet the target), the sensitivity analysis needed its metric and evaluated it in full, LiteMP took that
    k0 = next(p for p in lite["points"] if p["k"] == 0)
    w2a8 = next(r for r in base["results"] if r["name"] == "w2a8")
    assert k0["profile_key"] == w2a8["profile_key"] and k0["resumed"] and not w2a8["resumed"]
    assert w2a8["stopped_early"] and w2a8["samples_evaluated"] < 1541 and not w2a8["meets_target"]
    assert not k0["stopped_early"] and k0["samples_evaluated"] == 1541 and not k0["meets_target"]
    assert base["fp32_eval_seconds"] > 0 and all(v > 0 for v in base["worker_peak_rss_mb"].values())


def test_run_goes_on_to_amp_when_litemp_is_over_the_latency_budget(tmp_path: Path) -> None:
    res = _run(tmp_path, "--latency-budget", "1e-9")
    out = tmp_path / "out"
    assert "Step 3 - AMP" in res.stdout and "recommended:" in res.stdout
    flow = _json(out / "workflow.json")
    assert flow["stopped_at"] == "amp" and [s["step"] for s in flow["steps"]] == ["baseline", "litemp", "amp"]
    amp = _json(out / "amp" / "results.json")
    assert amp["accepted"]["drop"] <= 0.005 and Path(amp["accepted"]["onnx"]).is_file()
    base = _json(out / "baseline" / "results.json")
    chosen = next(r for r in base["results"] if r["name"] == base["chosen"])
    assert amp["accepted"]["bops_ratio"] <= chosen["bops_ratio"]  # AMP never does worse than Step 1's pick
    # nothing is estimated within 1e-9 ms: the accepted one is the cheapest passing profile of any step
    cheapest = min((s for s in flow["steps"] if s["profile"]), key=lambda s: s["bops_ratio"])
    assert flow["accepted"]["step"] == cheapest["step"]


def test_run_adarounds_sensitive_weights_and_repeats_steps_1_to_3(tmp_path: Path) -> None:
    """Candidates w8a8, fp16, w2a8: only 2-bit weights fail, so with AdaRound enabled (and a latency budget
    no profile meets, so Steps 1-3 all run) the workflow AdaRounds at w2a8 and runs Steps 1-3 again on the
    learned weights, where w2a8 itself passes and is accepted."""
    text = (ROOT / "experiments" / "mnist_cnn.yaml").read_text()
    text = text.replace("candidates: [w8a8, w8a16, w16a16, fp16, w4a8, w4a16, w4a4, w2a8]",
                        "candidates: [w8a8, fp16, w2a8]")
    assert "candidates: [w8a8, fp16, w2a8]" in text
    exp = tmp_path / "exp.yaml"
    exp.write_text(text + "workflow:\n  adaround: true\n  latency_budget_ms: 1.0e-9\n")
    res = _run(tmp_path, experiment=exp)
    out = tmp_path / "out"
    flow = _json(out / "workflow.json")
    steps = [s["step"] for s in flow["steps"]]
    assert steps[:4] == ["baseline", "litemp", "amp", "adaround"], flow["decisions"]
    ada = _json(out / "adaround" / "results.json")
    assert ada["precision"] == "w2a8" and ada["kept"] == "adaround" and ada["metric_after"] > ada["metric_before"]
    assert steps[4] == "after_adaround/baseline"
    again = _json(out / "after_adaround" / "baseline" / "results.json")
    w2a8 = next(r for r in again["results"] if r["name"] == "w2a8")
    assert w2a8["metric"] == pytest.approx(ada["metric_after"])  # the learned weights, in the sim of Step 1
    assert w2a8["meets_target"] and flow["stopped_at"] == "after_adaround/baseline"
    assert flow["accepted"]["step"] == "after_adaround/baseline" and flow["accepted"]["profile"] == "w2a8"
    assert "Step 4 - AdaRound" in res.stdout
