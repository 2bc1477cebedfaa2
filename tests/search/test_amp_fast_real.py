"""Fast AMP end to end on a real model: PaddleOCR's text-orientation classifier (128 quantizer groups, the six
default candidates: today's greedy phase 1 alone is 646 evaluations)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sweeper.config.experiment import load_experiment
from sweeper.model.session import reference_session
from sweeper.pipeline import Workspace
from sweeper.search.amp.step import run_amp

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def test_fast_amp_on_textcls_meets_the_target_in_a_few_dozen_evaluations(tmp_path: Path) -> None:
    exp = load_experiment(ROOT / "experiments" / "real_textcls.yaml")
    ws = Workspace(dataclasses.replace(exp, output=tmp_path / "out", study_storage=f"sqlite:///{tmp_path}/s.db"))
    pool = ws.pool("local", 1)  # the fast search runs no profile from stored activations
    try:
        rep = run_amp(ws, pool, None, candidates=list(ws.exp.candidates), algorithm="fast", measure=False)
    finally:
        pool.close()
    d = rep.doc
    groups, cands = len(ws.graph.groups), len(ws.exp.candidates)
    assert groups >= 100 and d["evaluations"] <= 25 < groups * cands // 20
    acc = d["accepted"]
    assert acc is not None and acc["mixed"] and acc["bops_ratio"] < 1.0  # cheaper than uniform w8a8
    # the accepted profile, exported as QDQ and scored by plain ONNX Runtime on the whole evaluation set
    sess = reference_session(acc["onnx"], 1)
    metric = ws.evaluator.evaluate(lambda feeds: sess.run(None, feeds), ws.eval_data, ws.reference)
    assert metric == pytest.approx(acc["metric"], abs=1e-9) and ws.meets(metric)
    ws.close()
