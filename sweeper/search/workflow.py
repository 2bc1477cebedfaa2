"""``sweeper run``: the whole workflow, its decision rules, and one summary of where the answer came from.

The workflow (AIMET's recommended PTQ flow) as rules over what each step found:

1. **Step 1** (baseline). Stop when the cheapest candidate already meets the target.
2. **Step 2** (analyze + LiteMP from the cheapest candidate towards Step 1's pick). Stop when LiteMP met the
   target and its estimated latency is within the optional ``latency_budget_ms``.
3. **Step 3** (AMP over the candidates).
4. **Step 4** (AdaRound), when enabled and the weights are the sensitive part (w16a16 passes and w8a16 does
   not, or every w4 candidate fails): AdaRound at that weight precision, then Steps 1-3 again on the new
   weights (in ``OUTPUT/after_adaround``).
5. **Step 5** (QAT), when enabled and the model is a PyTorch module with training data: QAT of the cheapest
   failing candidate, then Steps 1-3 again on the trained float weights (in ``OUTPUT/after_qat``), judged
   against the original model's FP32 metric.

The accepted profile is the cheapest (BOPs, then estimated latency) that met the target in any step. The rules
are plain functions of step results (:func:`cheapest_passes`, :func:`within_budget`,
:func:`weights_sensitive`, :func:`pick`) so each branch is tested without running a model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeper.config.spec import WorkflowSpec
from sweeper.quant.precision import Precision
from sweeper.search.evaluate import write_json


@dataclass
class Outcome:
    """What one step contributed: its best profile meeting the target (None: nothing met it)."""

    step: str
    profile: str | None
    metric: float | None = None
    drop: float | None = None
    bops_ratio: float | None = None
    est_latency_ms: float | None = None
    measured_latency_ms: float | None = None
    onnx: str | None = None
    encodings: str | None = None
    results: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class WorkflowReport:
    """``OUTPUT/workflow.json``: the steps in order (with why the workflow went on or stopped) and the
    accepted profile."""

    steps: list[Outcome] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)
    accepted: Outcome | None = None
    stopped_at: str = ""
    output: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {"stopped_at": self.stopped_at, "decisions": self.decisions,
                "accepted": None if self.accepted is None else self.accepted.to_json(),
                "steps": [o.to_json() for o in self.steps]}


# -- the rules ----------------------------------------------------------------------------------------------
def _cost_key(p: Precision) -> tuple[float, int, bool]:
    return p.bops_factor, p.weight_bits, p.is_float


def cheapest_passes(ok: Mapping[str, bool]) -> bool:
    """Rule 1: the cheapest candidate (fewest BOPs per MAC, then fewest weight bits) meets the target."""
    cheapest = min((Precision.parse(n) for n in ok), key=_cost_key)
    return bool(ok[cheapest.name])


def within_budget(outcome: Outcome | None, budget_ms: float | None) -> bool:
    """Rule 2: a step's profile met the target and (when there is a budget) is estimated within it."""
    if outcome is None or outcome.profile is None:
        return False
    return budget_ms is None or (outcome.est_latency_ms is not None and outcome.est_latency_ms <= budget_ms)


def weights_sensitive(ok: Mapping[str, bool]) -> str | None:
    """Rule 4: the weight precision that fails while higher weights pass, or None. w16a16 passing with w8a16
    failing means 8-bit weights lose it (``w8a16``); every candidate with 4-bit (or fewer) weights failing
    means those weights do: the one of them with the most activation bits (e.g. ``w4a8``), whose failure is
    the weights' alone."""
    if ok.get("w16a16") and ok.get("w8a16") is False:
        return "w8a16"
    low = [p for p in map(Precision.parse, ok) if not p.is_float and p.weight_bits <= 4]
    if low and not any(ok[p.name] for p in low):
        return max(low, key=lambda p: (p.act_bits, p.weight_bits)).name
    return None


def pick(outcomes: list[Outcome], budget_ms: float | None = None) -> Outcome | None:
    """The accepted profile: the cheapest by BOPs (then estimated latency, then the later step) of the steps'
    passing profiles, among those within the latency budget when any is."""
    passing = [o for o in outcomes if o.profile is not None and o.bops_ratio is not None]
    if not passing:
        return None
    passing = [o for o in passing if within_budget(o, budget_ms)] or passing
    inf = float("inf")  # an outcome without an estimate ranks after one with it at the same BOPs; at a tie
    order = {id(o): i for i, o in enumerate(passing)}  # the later step (AdaRound's profile found again by Step 1)
    return min(passing, key=lambda o: (o.bops_ratio, o.est_latency_ms if o.est_latency_ms is not None else inf,
                                       -order[id(o)]))


def cheapest_failed(ok: Mapping[str, bool]) -> str | None:
    """The cheapest candidate that failed Step 1 (what QAT trains by default)."""
    failed = [Precision.parse(n) for n, v in ok.items() if not v and not Precision.parse(n).is_float]
    return min(failed, key=_cost_key).name if failed else None


# -- outcomes of each step ----------------------------------------------------------------------------------
def _from_evaluated(step: str, ev: Any, results: Path) -> Outcome:
    return Outcome(step, ev.name, ev.metric, ev.drop, ev.bops_ratio, ev.est_latency_ms, None, ev.onnx,
                   ev.encodings, str(results))


def baseline_outcome(rep: Any, label: str = "baseline") -> Outcome:
    chosen = next((r for r in rep.rows if r.name == rep.chosen), None)
    if chosen is None:
        return Outcome(label, None, results=str(rep.output / "results.json"))
    return _from_evaluated(label, chosen, rep.output / "results.json")


def litemp_outcome(rep: Any, label: str = "litemp") -> Outcome:
    if rep.chosen is None:
        return Outcome(label, None, results=str(rep.output / "results.json"))
    out = _from_evaluated(label, rep.chosen.result, rep.output / "results.json")
    out.profile = f"k={rep.chosen.k:g}% ({len(rep.chosen.flipped)} groups flipped)"
    return out


def amp_outcome(rep: Any, label: str = "amp") -> Outcome:
    a = rep.doc.get("accepted")
    results = str(rep.output / "results.json")
    if not a:
        return Outcome(label, None, results=results)
    return Outcome(label, a.get("profile"), a.get("metric"), a.get("drop"), a.get("bops_ratio"),
                   a.get("est_latency_ms"), a.get("measured_latency_ms"), a.get("onnx"), a.get("encodings"), results)


def doc_outcome(label: str, doc: Mapping[str, Any], meets: Callable[[float], bool], results: Path) -> Outcome:
    """A step whose results document has its final metric value (AdaRound's ``metric_kept``, QAT's
    ``metric_after``; ``metric`` names the metric in every results.json), the profile
    (``profile``/``precision``) and export paths (AdaRound, QAT). A uniform profile without ``bops_ratio``
    costs its bit widths over w8a8's."""
    metric = doc.get("metric_kept", doc.get("metric_after"))
    if metric is None or not meets(float(metric)):
        return Outcome(label, None, None if metric is None else float(metric), results=str(results))
    profile = str(doc.get("profile") or doc.get("precision"))
    bops = doc.get("bops_ratio")
    if bops is None:
        try:
            bops = Precision.parse(profile).bops_factor / Precision.parse("w8a8").bops_factor
        except ValueError:
            bops = None
    drop = doc.get("drop", doc.get("drop_after"))
    return Outcome(label, profile, float(metric), drop, bops, doc.get("est_latency_ms"),
                   doc.get("measured_latency_ms"), doc.get("onnx"), doc.get("encodings"), str(results))


# -- the driver ---------------------------------------------------------------------------------------------
def _steps_1_to_3(s: Any, settings: WorkflowSpec, report: WorkflowReport, fresh: bool, label: str,
                  show: Callable[[str, Any], None]) -> dict[str, bool]:
    """Steps 1-3 with their stopping rules; returns Step 1's pass/fail per candidate."""
    rep = s.baseline(fresh=fresh)
    show("baseline", rep)
    ok = {r.name: bool(r.meets_target) for r in rep.rows}
    report.steps.append(baseline_outcome(rep, f"{label}baseline"))
    if cheapest_passes(ok):
        report.decisions.append(f"{label}Step 1: the cheapest candidate meets the target: stop")
        report.stopped_at = f"{label}baseline"
        return ok
    cheapest = min((Precision.parse(n) for n in ok), key=_cost_key)
    high = rep.chosen or max((Precision.parse(n) for n in ok), key=lambda p: p.bops_factor).name
    report.decisions.append(f"{label}Step 1: {cheapest.name} misses the target: Step 2 (LiteMP {cheapest.name} "
                            f"towards {high})")
    lite = s.litemp(cheapest, high=high, fresh=fresh)
    show("litemp", lite)
    report.steps.append(litemp_outcome(lite, f"{label}litemp"))
    if within_budget(report.steps[-1], settings.latency_budget_ms):
        budget = settings.latency_budget_ms
        within = "" if budget is None else f" within {budget:g} ms/sample"
        report.decisions.append(f"{label}Step 2: LiteMP met the target{within}: stop")
        report.stopped_at = f"{label}litemp"
        return ok
    why = "missed the target" if report.steps[-1].profile is None else "is over the latency budget"
    report.decisions.append(f"{label}Step 2: LiteMP {why}: Step 3 (AMP)")
    amp = s.amp(algorithm="auto", fresh=fresh)
    show("amp", amp)
    report.steps.append(amp_outcome(amp, f"{label}amp"))
    report.stopped_at = f"{label}amp"
    return ok


def workflow_needs(candidates: Any) -> Any:
    """What the workflow's workers must be able to do, so that one pool serves Steps 1-3 (Step 2 analyses
    from the cheapest candidate, with SQNR probes; AMP uses prefix reuse)."""
    from sweeper.search.analyzer import analysis_precisions
    from sweeper.search.step import PoolNeeds

    cheapest = min(candidates, key=_cost_key)
    return PoolNeeds((*(c.name for c in candidates), *analysis_precisions(cheapest)), probes=True, reuse=True)


def run_workflow(s: Any, settings: WorkflowSpec, fresh: bool = False,
                 show: Callable[[str, Any], None] = lambda name, value: None) -> WorkflowReport:
    """Run the workflow on a :class:`~sweeper.api.Session` (see the module docstring); ``show(step, value)``
    is called after each step (the CLI prints the step's report). Writes ``OUTPUT/workflow.json``; with
    tracking, one MLflow run holds every step's run and the summary."""
    report = WorkflowReport(output=s.exp.output / "workflow.json")
    root = s.exp.output
    s.pool(workflow_needs(s.exp.candidates))  # one pool for every step of a round
    if s.tracker is not None:
        s.tracker.start_workflow({k: v for k, v in dataclasses.asdict(settings).items() if v is not None})
    try:
        ok = _steps_1_to_3(s, settings, report, fresh, "", show)
        if report.stopped_at == "amp":
            _adaround_round(s, settings, report, ok, fresh, show)
            _qat_step(s, settings, report, ok, fresh, show)
        report.accepted = pick(report.steps, settings.latency_budget_ms)
        report.decisions.append("accepted: " + ("nothing met the target" if report.accepted is None else
                                                f"{report.accepted.profile} from {report.accepted.step}"))
        root.mkdir(parents=True, exist_ok=True)
        write_json(report.output, report.to_json())
    except BaseException:
        if s.tracker is not None:
            s.tracker.end_workflow({}, {}, "the workflow failed or was interrupted", [], failed=True)
        raise
    if s.tracker is not None:
        _log_summary(s.tracker, report)
    return report


def _log_summary(tracker: Any, report: WorkflowReport) -> None:
    a = report.accepted
    metrics = {} if a is None else {k: v for k, v in (("metric", a.metric), ("drop", a.drop), ("bops_ratio",
               a.bops_ratio), ("est_latency_ms", a.est_latency_ms), ("measured_latency_ms", a.measured_latency_ms))
               if v is not None}
    tags = {} if a is None else {"sweeper.accepted_step": a.step, "sweeper.accepted_profile": str(a.profile)}
    note = "\n".join(f"- {d}" for d in report.decisions)
    artifacts = [report.output] if report.output is not None else []
    tracker.end_workflow(metrics, tags, note, artifacts)


def _adaround_round(s: Any, settings: WorkflowSpec, report: WorkflowReport, ok: dict[str, bool],
                    fresh: bool, show: Callable[[str, Any], None]) -> None:
    """Rule 4: AdaRound where the weights are the sensitive part, then Steps 1-3 on the new weights."""
    sensitive = weights_sensitive(ok)
    if sensitive is None or not settings.adaround:
        report.decisions.append("Step 4 (AdaRound): " + ("disabled" if sensitive is not None and not
                                                        settings.adaround else "the weights are not the sensitive part"))
        return
    precision = settings.adaround_precision or sensitive
    report.decisions.append(f"Step 4: weights are the sensitive part ({sensitive} fails): AdaRound at {precision}")
    kwargs = {} if settings.adaround_iterations is None else {"iterations": settings.adaround_iterations}
    ada = s.adaround(precision=precision, fresh=fresh, **kwargs)
    show("adaround", ada)
    doc = ada if isinstance(ada, Mapping) else getattr(ada, "doc", {})
    report.steps.append(doc_outcome("adaround", doc, s.ws.meets, s.exp.output / "adaround" / "results.json"))
    if doc.get("kept") != "adaround":
        report.decisions.append("Step 4: nearest rounding stayed better: Steps 1-3 are not repeated")
        return
    s.use_adaround(s.exp.output / "adaround")
    report.decisions.append("Step 4: Steps 1-3 again on the AdaRounded weights (in after_adaround/)")
    _repeat_steps(s, settings, report, fresh, show, "after_adaround")


def _repeat_steps(s: Any, settings: WorkflowSpec, report: WorkflowReport, fresh: bool,
                  show: Callable[[str, Any], None], folder: str) -> None:
    """Steps 1-3 again on new weights (after AdaRound or QAT), written under ``OUTPUT/<folder>``, on one pool."""
    root = s.exp.output
    s.set_output(root / folder)
    try:
        s.pool(workflow_needs(s.exp.candidates))
        _steps_1_to_3(s, settings, report, fresh, f"{folder}/", show)
    finally:
        s.set_output(root)


def _qat_step(s: Any, settings: WorkflowSpec, report: WorkflowReport, ok: dict[str, bool], fresh: bool,
              show: Callable[[str, Any], None]) -> None:
    """Rule 5: QAT, when enabled and the model is a PyTorch module with training data, then Steps 1-3 again on
    the trained float model (:meth:`~sweeper.api.Session.use_model`)."""
    if not settings.qat:
        report.decisions.append("Step 5 (QAT): disabled")
        return
    if not s.ws.from_torch:
        report.decisions.append("Step 5 (QAT): needs a PyTorch model (model.torch): skipped")
        return
    profile = settings.qat_profile or cheapest_failed(ok)
    if profile is None:
        report.decisions.append("Step 5 (QAT): every candidate passes: nothing to train")
        return
    report.decisions.append(f"Step 5: QAT of {profile}")
    q = s.qat(profile=profile, fresh=fresh)
    show("qat", q)
    doc = q if isinstance(q, Mapping) else getattr(q, "doc", {})
    report.steps.append(doc_outcome("qat", doc, s.ws.meets, s.exp.output / "qat" / "results.json"))
    trained = doc.get("trained_onnx")
    if not trained:
        return
    s.use_model(trained)
    report.decisions.append("Step 5: Steps 1-3 again on the QAT-trained weights, calibrated afresh and judged "
                            "against the original FP32 model (in after_qat/)")
    _repeat_steps(s, settings, report, fresh, show, "after_qat")


__all__ = ["Outcome", "WorkflowReport", "amp_outcome", "baseline_outcome", "cheapest_failed",
           "cheapest_passes", "doc_outcome", "litemp_outcome", "pick", "run_workflow", "weights_sensitive",
           "within_budget"]
