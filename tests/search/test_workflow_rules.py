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

from sweeper.config.spec import WorkflowSpec
from sweeper.quant.precision import Precision
from sweeper.search.step import PoolNeeds
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
    """A session with every method of :class:`sweeper.api.Session` that the workflow calls (``pool``,
    ``baseline``, ``litemp``, ``amp``, ``adaround``, ``use_adaround``, ``qat``, ``use_model``, ``set_output``),
    answering from a script. ``calls`` records which ran, in order; a step run while the output is a
    subfolder of the experiment's is recorded as ``folder/step``. ``ok_after`` is Step 1's answer on new weights
    (after ``use_adaround`` or ``use_model``)."""

    out: Path
    ok: dict[str, bool]
    litemp_meets: bool = True
    amp_meets: bool = True
    adaround_kept: str = "adaround"
    ok_after: dict[str, bool] | None = None
    from_torch: bool = True
    calls: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.exp = SimpleNamespace(output=self.out, metric="top1", candidates=[Precision.parse(n) for n in CANDS])
        self.ws = SimpleNamespace(meets=lambda m: m >= 0.9, from_torch=self.from_torch)
        self.tracker = None
        self.new_weights = False

    def _call(self, name: str) -> None:
        folder = self.exp.output.relative_to(self.out).as_posix()
        self.calls.append(name if folder == "." else f"{folder}/{name}")

    def pool(self, needs: Any) -> Any:
        assert isinstance(needs, PoolNeeds) and set(CANDS) <= set(needs.extra_precisions)
        self._call("pool")
        return None

    def baseline(self, fresh: bool = False) -> Any:
        self._call("baseline")
        ok = self.ok_after if self.new_weights and self.ok_after is not None else self.ok
        rows = [_row(n, v) for n, v in ok.items()]
        passing = sorted((r for r in rows if r.meets_target), key=lambda r: r.bops_ratio)
        return SimpleNamespace(rows=rows, chosen=passing[0].name if passing else None, output=self.exp.output)

    def litemp(self, base: Any, high: Any, fresh: bool = False) -> Any:
        self._call(f"litemp:{base.name}->{high}")
        row = SimpleNamespace(**{**vars(_row("litemp", True)), "est_latency_ms": 5.0})
        chosen = SimpleNamespace(k=30.0, flipped=["g1"], result=row) if self.litemp_meets else None
        return SimpleNamespace(chosen=chosen, output=self.exp.output)

    def amp(self, algorithm: str = "greedy", fresh: bool = False) -> Any:
        self._call("amp")
        acc = {"profile": "mix", "metric": 0.93, "drop": 0.01, "bops_ratio": 0.8, "est_latency_ms": 0.8,
               "measured_latency_ms": 0.7, "onnx": "mix.onnx"} if self.amp_meets else None
        return SimpleNamespace(doc={"accepted": acc}, output=self.exp.output)

    def adaround(self, precision: str, fresh: bool = False, **kw: Any) -> Any:
        self._call(f"adaround:{precision}")  # the keys of sweeper.search.adaround's results.json
        return {"metric": "top1", "precision": precision, "kept": self.adaround_kept, "metric_before": 0.5,
                "metric_after": 0.92, "metric_kept": 0.92 if self.adaround_kept == "adaround" else 0.5}

    def use_adaround(self, path: Path) -> None:
        assert path == self.out / "adaround"
        self._call("use_adaround")
        self.new_weights = True

    def set_output(self, path: Path) -> None:
        self.exp.output = path

    def qat(self, profile: str, fresh: bool = False) -> Any:
        self._call(f"qat:{profile}")  # the keys of sweeper.search.qat's results.json
        return {"metric": "top1", "profile": profile, "metric_before": 0.5, "metric_after": 0.91,
                "onnx": "qat.onnx", "trained_onnx": str(self.exp.output / "qat" / "trained.onnx")}

    def use_model(self, model: str) -> None:
        assert Path(model) == self.out / "qat" / "trained.onnx"
        self._call("use_model")
        self.new_weights = True


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


STEPS_1_TO_3 = ["pool", "baseline", "litemp:w4a8->w8a8", "amp"]  # a round that goes on to Step 3


def test_stops_at_step_1_when_the_cheapest_candidate_passes(tmp_path: Path) -> None:
    s = Scripted(tmp_path, ALL_PASS)
    rep = run_workflow(s, WorkflowSpec(adaround=True, qat=True))
    assert s.calls == ["pool", "baseline"] and rep.stopped_at == "baseline" and rep.accepted.profile == "w4a8"
    assert json.loads((tmp_path / "workflow.json").read_text())["accepted"]["step"] == "baseline"


def test_stops_at_step_2_when_litemp_meets_the_target_within_the_budget(tmp_path: Path) -> None:
    s = Scripted(tmp_path, W4_FAILS)
    rep = run_workflow(s, WorkflowSpec(adaround=True))
    assert s.calls == ["pool", "baseline", "litemp:w4a8->w8a8"] and rep.stopped_at == "litemp"


def test_goes_to_amp_when_litemp_is_over_the_latency_budget_or_misses(tmp_path: Path) -> None:
    s = Scripted(tmp_path, W4_FAILS)
    rep = run_workflow(s, WorkflowSpec(latency_budget_ms=0.1))
    assert s.calls == STEPS_1_TO_3 and rep.stopped_at == "amp"
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
    assert s.calls == [*STEPS_1_TO_3, "adaround:w4a16", "use_adaround",
                       "after_adaround/pool", "after_adaround/baseline"]
    assert [o.step for o in rep.steps] == ["baseline", "litemp", "amp", "adaround", "after_adaround/baseline"]
    assert rep.steps[3].profile == "w4a16" and rep.steps[3].metric == 0.92  # AdaRound's kept metric
    assert rep.stopped_at == "after_adaround/baseline"
    assert rep.accepted.step == "after_adaround/baseline" and rep.accepted.profile == "w4a8"
    assert s.exp.output == tmp_path  # later steps write where the experiment says again


def test_adaround_keeping_nearest_does_not_repeat_the_steps(tmp_path: Path) -> None:
    s = Scripted(tmp_path, W4_FAILS, litemp_meets=False, adaround_kept="nearest")
    rep = run_workflow(s, WorkflowSpec(adaround=True))
    assert s.calls == [*STEPS_1_TO_3, "adaround:w4a16"]
    assert rep.steps[-1].step == "adaround" and rep.steps[-1].profile is None  # 0.5 misses the target


def test_no_adaround_when_activations_are_the_sensitive_part(tmp_path: Path) -> None:
    ok = {**ALL_PASS, "w4a8": False, "w8a8": False}  # w4a16 passes: 4-bit weights are fine
    s = Scripted(tmp_path, ok, litemp_meets=False)
    rep = run_workflow(s, WorkflowSpec(adaround=True))
    assert "adaround:w4a16" not in s.calls and any("not the sensitive part" in d for d in rep.decisions)


def test_qat_then_steps_1_to_3_again_on_the_trained_weights(tmp_path: Path) -> None:
    """Rule 5: QAT of the cheapest failing candidate, then Steps 1-3 again on the trained float model (which
    ``use_model`` loads) in after_qat/, where the trained w4a8 now passes Step 1."""
    s = Scripted(tmp_path, W4_FAILS, litemp_meets=False, amp_meets=False, ok_after=ALL_PASS)
    rep = run_workflow(s, WorkflowSpec(qat=True))
    assert s.calls == [*STEPS_1_TO_3, "qat:w4a8", "use_model", "after_qat/pool", "after_qat/baseline"]
    assert [o.step for o in rep.steps] == ["baseline", "litemp", "amp", "qat", "after_qat/baseline"]
    assert rep.steps[3].profile == "w4a8" and rep.steps[3].metric == 0.91 and rep.steps[3].bops_ratio == 0.5
    assert rep.stopped_at == "after_qat/baseline"
    # QAT's w4a8 and Step 1's w4a8 on the trained weights cost the same BOPs: the one with a latency estimate
    assert rep.accepted.step == "after_qat/baseline" and rep.accepted.profile == "w4a8"
    assert any("again on the QAT-trained weights" in d for d in rep.decisions)
    assert s.exp.output == tmp_path


def test_qat_then_every_step_again_when_the_trained_model_still_fails_step_1(tmp_path: Path) -> None:
    s = Scripted(tmp_path, W4_FAILS, litemp_meets=False, amp_meets=False)
    rep = run_workflow(s, WorkflowSpec(qat=True))
    assert s.calls == [*STEPS_1_TO_3, "qat:w4a8", "use_model", *(f"after_qat/{c}" for c in STEPS_1_TO_3)]
    assert rep.stopped_at == "after_qat/amp" and rep.accepted.step == "qat" and rep.accepted.profile == "w4a8"


def test_no_qat_for_a_model_that_is_not_pytorch(tmp_path: Path) -> None:
    s = Scripted(tmp_path, W4_FAILS, litemp_meets=False, amp_meets=False, from_torch=False)
    rep = run_workflow(s, WorkflowSpec(qat=True))
    assert s.calls == STEPS_1_TO_3 and rep.accepted.step == "baseline"
    assert any("needs a PyTorch model" in d for d in rep.decisions)
