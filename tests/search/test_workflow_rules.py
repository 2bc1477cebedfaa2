"""`sweeper run`'s decision rules (sweeper.search.workflow), branch by branch.

The rules are functions of what the steps found; the driver is run here on a scripted session whose steps
return fixed results (the steps themselves are tested end to end elsewhere: tests/e2e/test_run_workflow.py),
so every branch is reached in milliseconds and the order of the steps is checked exactly."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sweeper.config.experiment import WorkflowSpec
from sweeper.search.workflow import (
    Outcome,
    cheapest_failed,
    cheapest_passes,
    pick,
    run_workflow,
    weights_sensitive,
    within_budget,
)

CANDS = {"w8a8": 1.0, "w8a16": 2.0, "w16a16": 4.0, "fp16": 4.0, "w4a8": 0.5, "w4a16": 1.0}


def _row(name: str, ok: bool) -> Any:
    return SimpleNamespace(name=name, meets_target=ok, metric=0.95 if ok else 0.5, drop=0.0 if ok else 0.45,
                           bops_ratio=CANDS.get(name, 0.25), est_latency_ms=CANDS.get(name, 0.25),
                           onnx=f"{name}.onnx", encodings=f"{name}.encodings")


@dataclass
class Scripted:
    """A session whose steps answer from a script; ``calls`` records which steps ran, in order."""

    out: Path
    ok: dict[str, bool]
    litemp_meets: bool = True
    amp_meets: bool = True
    adaround_kept: str = "adaround"
    ok_after: dict[str, bool] | None = None
    from_torch: bool = True
    calls: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.exp = SimpleNamespace(output=self.out, metric="top1")
        self.ws = SimpleNamespace(meets=lambda m: m >= 0.9, from_torch=self.from_torch)
        self.tracker = None
        self.rounded = False

    def baseline(self, fresh: bool = False) -> Any:
        self.calls.append("baseline")
        ok = self.ok_after if self.rounded and self.ok_after is not None else self.ok
        rows = [_row(n, v) for n, v in ok.items()]
        passing = sorted((r for r in rows if r.meets_target), key=lambda r: r.bops_ratio)
        return SimpleNamespace(rows=rows, chosen=passing[0].name if passing else None, output=self.exp.output)

    def litemp(self, base: Any, high: Any, fresh: bool = False) -> Any:
        self.calls.append(f"litemp:{base.name}->{high}")
        row = SimpleNamespace(**{**vars(_row("litemp", True)), "est_latency_ms": 5.0})
        chosen = SimpleNamespace(k=30.0, flipped=["g1"], result=row) if self.litemp_meets else None
        return SimpleNamespace(chosen=chosen, output=self.exp.output)

    def amp(self, algorithm: str = "greedy", fresh: bool = False) -> Any:
        self.calls.append("amp")
        acc = {"profile": "mix", "metric": 0.93, "drop": 0.01, "bops_ratio": 0.8, "est_latency_ms": 0.8,
               "measured_latency_ms": 0.7, "onnx": "mix.onnx"} if self.amp_meets else None
        return SimpleNamespace(doc={"accepted": acc}, output=self.exp.output)

    def adaround(self, precision: str, fresh: bool = False, **kw: Any) -> Any:
        self.calls.append(f"adaround:{precision}")
        return {"precision": precision, "kept": self.adaround_kept, "metric": 0.92, "bops_ratio": CANDS[precision]}

    def use_adaround(self, path: Path) -> None:
        self.calls.append("use_adaround")
        self.rounded = True

    def set_output(self, path: Path) -> None:
        self.exp.output = path

    def qat(self, profile: str, fresh: bool = False) -> Any:
        self.calls.append(f"qat:{profile}")
        return {"profile": profile, "metric": 0.91, "bops_ratio": 0.5}


ALL_PASS = dict.fromkeys(CANDS, True)
W4_FAILS = {**ALL_PASS, "w4a8": False, "w4a16": False}


def test_rule_functions() -> None:
    assert cheapest_passes(ALL_PASS) and not cheapest_passes(W4_FAILS)
    assert weights_sensitive(W4_FAILS) == "w4a16"  # the w4 candidate whose failure is the weights' alone
    assert weights_sensitive({**ALL_PASS, "w8a16": False}) == "w8a16"
    assert weights_sensitive({**ALL_PASS, "w8a8": False, "w4a8": False}) is None  # w4a16 passes: activations
    assert weights_sensitive({"w8a8": True, "w2a8": False}) == "w2a8"
    assert cheapest_failed(W4_FAILS) == "w4a8" and cheapest_failed(ALL_PASS) is None
    good = Outcome("litemp", "k=30%", 0.95, 0.0, 0.8, 2.0)
    assert within_budget(good, None) and within_budget(good, 2.0) and not within_budget(good, 1.9)
    assert not within_budget(Outcome("litemp", None), None)
    assert pick([good, Outcome("amp", "mix", 0.94, 0.01, 0.6, 3.0), Outcome("x", None)]).step == "amp"


def test_stops_at_step_1_when_the_cheapest_candidate_passes(tmp_path: Path) -> None:
    s = Scripted(tmp_path, ALL_PASS)
    rep = run_workflow(s, WorkflowSpec(adaround=True, qat=True))
    assert s.calls == ["baseline"] and rep.stopped_at == "baseline" and rep.accepted.profile == "w4a8"
    assert json.loads((tmp_path / "workflow.json").read_text())["accepted"]["step"] == "baseline"


def test_stops_at_step_2_when_litemp_meets_the_target_within_the_budget(tmp_path: Path) -> None:
    s = Scripted(tmp_path, W4_FAILS)
    rep = run_workflow(s, WorkflowSpec(adaround=True))
    assert s.calls == ["baseline", "litemp:w4a8->w8a8"] and rep.stopped_at == "litemp"


def test_goes_to_amp_when_litemp_is_over_the_latency_budget_or_misses(tmp_path: Path) -> None:
    s = Scripted(tmp_path, W4_FAILS)
    rep = run_workflow(s, WorkflowSpec(latency_budget_ms=0.1))
    assert s.calls == ["baseline", "litemp:w4a8->w8a8", "amp"] and rep.stopped_at == "amp"
    # nothing is within 0.1 ms: the cheapest passing profile by BOPs (LiteMP's, 0.25x)
    assert rep.accepted.step == "litemp"
    assert pick(rep.steps, 0.8).step == "amp"  # within a budget that AMP's mix meets, that one
    s2 = Scripted(tmp_path / "b", W4_FAILS, litemp_meets=False)
    assert run_workflow(s2, WorkflowSpec()).stopped_at == "amp"
    assert any("disabled" in d for d in run_workflow(Scripted(tmp_path / "c", W4_FAILS, litemp_meets=False),
                                                     WorkflowSpec()).decisions)


def test_adaround_then_steps_1_to_3_again_when_weights_are_sensitive(tmp_path: Path) -> None:
    s = Scripted(tmp_path, W4_FAILS, litemp_meets=False, ok_after=ALL_PASS)
    rep = run_workflow(s, WorkflowSpec(adaround=True))
    assert s.calls == ["baseline", "litemp:w4a8->w8a8", "amp", "adaround:w4a16", "use_adaround", "baseline"]
    assert rep.stopped_at == "after_adaround/baseline"
    assert rep.accepted.step == "after_adaround/baseline" and rep.accepted.profile == "w4a8"
    assert s.exp.output == tmp_path  # later steps write where the experiment says again


def test_adaround_keeping_nearest_does_not_repeat_the_steps(tmp_path: Path) -> None:
    s = Scripted(tmp_path, W4_FAILS, litemp_meets=False, adaround_kept="nearest")
    run_workflow(s, WorkflowSpec(adaround=True))
    assert s.calls == ["baseline", "litemp:w4a8->w8a8", "amp", "adaround:w4a16"]


def test_no_adaround_when_activations_are_the_sensitive_part(tmp_path: Path) -> None:
    ok = {**ALL_PASS, "w4a8": False, "w8a8": False}  # w4a16 passes: 4-bit weights are fine
    s = Scripted(tmp_path, ok, litemp_meets=False)
    rep = run_workflow(s, WorkflowSpec(adaround=True))
    assert "adaround:w4a16" not in s.calls and any("not the sensitive part" in d for d in rep.decisions)


@pytest.mark.parametrize("from_torch", [True, False])
def test_qat_last_and_only_for_a_pytorch_model(tmp_path: Path, from_torch: bool) -> None:
    s = Scripted(tmp_path, W4_FAILS, litemp_meets=False, amp_meets=False, from_torch=from_torch)
    rep = run_workflow(s, WorkflowSpec(qat=True))
    if from_torch:
        assert s.calls[-1] == "qat:w4a8" and rep.accepted.step == "qat"
    else:
        assert not any(c.startswith("qat") for c in s.calls) and rep.accepted.step == "baseline"
