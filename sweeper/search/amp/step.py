"""The AMP step: its searches in order over one shared state, the answer (the cheapest passing profile
evaluated), its Pareto front, latency measurements, exports, plot and results document."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper.pipeline import Workspace
from sweeper.quant.precision import Precision
from sweeper.quant.profile import Profile
from sweeper.replica import render_in_background
from sweeper.search.amp.common import AMPState, UniformSearch, cost_function, pareto_front, resolve_algorithm
from sweeper.search.amp.fast import FastAMP
from sweeper.search.amp.greedy import GreedyAMP
from sweeper.search.amp.latency import latency_doc, latency_fields, measure_and_check, spearman
from sweeper.search.amp.optuna_search import OptunaSearch
from sweeper.search.evaluate import Evaluated
from sweeper.search.names import ALGORITHMS
from sweeper.search.step import Batch, PoolNeeds, Step, StepContext, StepOutput, Stream, run_step
from sweeper.tracking.tracker import Tracker


@dataclass
class AMPReport:
    doc: dict[str, Any]
    output: Path


class AMPStep(Step):
    """Step 3 as a :class:`~sweeper.search.step.Step`: the algorithm's searches in order (see ``SEARCHES``)
    share one state of evaluated profiles; the answer is the cheapest passing profile evaluated."""

    name = "amp"
    export_each = False

    def __init__(self, ws: Workspace, candidates: list[Precision], *, algorithm: str = "greedy", cost: str = "bops",
                 objective: str = "multi", trials: int = 100, timeout: float | None = None, fresh: bool = False,
                 measure: bool = True, workers: int = 1, startup_seconds: float = 0.0) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {algorithm!r}: expected one of {', '.join(ALGORITHMS)}")
        algorithm = resolve_algorithm(algorithm, len(ws.graph.groups), len(candidates))
        self.ws, self.candidates, self.algorithm, self.cost_name = ws, candidates, algorithm, cost
        self.objective, self.trials, self.measure = objective, trials, measure
        self.strategy = algorithm
        self.cost = cost_function(ws, cost)
        self.state = AMPState()
        self.greedy = GreedyAMP(ws, candidates, self.cost, workers)
        make = {"greedy": lambda: self.greedy, "fast": lambda: FastAMP(ws, candidates, self.cost, workers, cost_name=cost),
                "uniform": lambda: UniformSearch(self.greedy.groups, candidates),
                "optuna": lambda: OptunaSearch(ws, candidates, self.cost, cost, objective, trials, timeout, fresh)}
        self.searches = {kind: make[kind]() for kind in SEARCHES[algorithm]}
        self._order = list(self.searches.values())
        self._current: Any = None
        self._t0: float | None = None
        self._startup0 = startup_seconds

    def ok(self, metric: float) -> bool:
        return self.ws.meets(metric)

    def params(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm, "cost": self.cost_name, "objective": self.objective,
                "trials": self.trials, "amp_candidates": ",".join(c.name for c in self.candidates)}

    def pool_needs(self) -> PoolNeeds:
        return PoolNeeds(tuple(c.name for c in self.candidates), reuse=True)

    def propose(self) -> Batch | Stream | None:
        if self._t0 is None:
            self._t0 = time.perf_counter()
        while self._order:
            proposal = self._order[0].propose(self.state, self.ok)
            if proposal is not None:
                self._current = self._order[0]
                return proposal
            self._order.pop(0)
        return None

    def observe(self, results: dict[str, Evaluated], profiles: dict[str, Profile]) -> None:
        for name, ev in results.items():
            self.state.add(ev, profiles[name])
        self._current.observe(results, profiles)

    def finish(self, ctx: StepContext) -> StepOutput:
        startup = getattr(ctx.pool, "startup_seconds", 0.0) - self._startup0
        search_seconds = time.perf_counter() - (self._t0 or time.perf_counter()) - startup
        return _amp_result(self, ctx, search_seconds, startup)


SEARCHES = {"greedy": ("greedy",), "fast": ("fast",), "optuna": ("uniform", "optuna"),
            "greedy+optuna": ("greedy", "optuna"), "fast+optuna": ("fast", "optuna")}


def _plot_doc(step: AMPStep, front: list[Any], accepted: tuple[Profile, Evaluated] | None,
              reports: dict[str, Any]) -> dict[str, Any]:
    ws, cost_of, st = step.ws, step.cost, step.state
    return {"experiment": ws.exp.name, "metric": ws.exp.metric, "fp32_metric": ws.fp32_metric,
            "max_drop": ws.exp.max_drop, "threshold": ws.target.threshold, "algorithm": step.algorithm,
            "cost": step.cost_name, "evaluations": len(st.evaluated),
            "all": [{"cost": cost_of(p), "metric": ev.metric} for p, ev in st.evaluated.values()],
            "greedy": reports.get("greedy"), "pareto_front": [{"cost": c, "metric": item[1].metric} for _, c, item in front],
            "accepted": None if accepted is None else {"cost": cost_of(accepted[0]), "metric": accepted[1].metric,
                                                       "profile": accepted[0].label()}}


def _amp_result(step: AMPStep, ctx: StepContext, search_seconds: float, startup: float) -> StepOutput:
    """The answer (the cheapest passing profile evaluated: greedy's pick, Optuna's, or a uniform one), its
    Pareto front, latency measurements, exports, the plot and the results document."""
    ws, cost_of, st, ok = step.ws, step.cost, step.state, step.ok
    higher = ws.exp.higher_is_better
    reports = {k: s.report(st, ok) for k, s in step.searches.items()}
    # a profile whose evaluation stopped early is on no front and never the answer (its metric is partial)
    points = [(ev.metric if higher else -ev.metric, cost_of(p), (p, ev)) for p, ev in st.evaluated.values()
              if not ev.stopped_early]
    passing = [(c, m, item) for m, c, item in points if ok(item[1].metric)]
    accepted = min(passing, key=lambda t: (t[0], -t[1]))[2] if passing else None
    front = pareto_front(points)
    plot = render_in_background(ctx.pool, _plot_doc(step, front, accepted, reports), "amp_pareto")
    lat = measure_and_check(ws, ctx.sweep, st, ok, accepted, front, step.cost_name) if step.measure else None
    if lat is not None:
        accepted = lat.accepted
    exports = lat.exports if lat is not None else {}
    if accepted is not None and "accepted" not in exports:
        exports.update(ctx.sweep.export_profiles({"accepted": accepted[0]}))
    measured = lat.measured if lat is not None else {}
    front_doc = []
    for i, (_, c, (p, ev)) in enumerate(front):
        n = f"front{i:02d}"
        front_doc.append({"name": ev.name, "metric": ev.metric, "drop": ev.drop, "cost": c,
                          "bops_ratio": ev.bops_ratio, **latency_fields(ev, measured.get(n)), "profile": p.label(),
                          "onnx": ctx.final_path(exports[n][0].name) if n in exports else None})
    timed = [f for f in front_doc if f["measured_ms_per_sample"] is not None]
    corr = spearman([f["est_ms_per_sample"] for f in timed], [f["measured_ms_per_sample"] for f in timed])
    accepted_doc = None
    if accepted is not None:
        p, ev = accepted
        accepted_doc = {"name": ev.name, "metric": ev.metric, "drop": ev.drop, "cost": cost_of(p),
                        "bops_ratio": ev.bops_ratio, "size_mb": ev.size_mb,
                        **latency_fields(ev, measured.get("accepted")), "profile": p.label(),
                        "mixed": len(set(p.to_json().values())) > 1, "assignment": p.to_json(),
                        "onnx": ctx.final_path("accepted.onnx"), "encodings": ctx.final_path("accepted.encodings")}
    uniform_passing = sorted((cost_of(p), f"uniform:{u.name}") for p, ev in st.evaluated.values()
                             if (u := p.uniform_precision) is not None and ok(ev.metric))
    doc = {"experiment": ws.exp.name, "metric": ws.exp.metric, "fp32_metric": ws.fp32_metric,
           "max_drop": ws.exp.max_drop, "algorithm": step.algorithm, "cost": step.cost_name,
           "candidates": [c.name for c in step.candidates], "accepted": accepted_doc,
           "cheapest_passing_uniform": uniform_passing[0][1] if uniform_passing else None,
           "evaluations": len(st.evaluated), "search_seconds": search_seconds, "pool_startup_seconds": startup,
           "pareto_front": front_doc, "latency_rank_correlation": corr, "latency": latency_doc(ws, lat, corr),
           "greedy": reports.get("greedy"), "fast": reports.get("fast"), "optuna": reports.get("optuna"),
           "faults": ctx.pool.faults() if hasattr(ctx.pool, "faults") else None,
           "all": [{"name": ev.name, "metric": ev.metric, "cost": cost_of(p), "profile": p.label(),
                    "samples_evaluated": ev.samples_evaluated, "stopped_early": ev.stopped_early,
                    "resumed": ev.resumed}
                   for p, ev in st.evaluated.values()]}
    (ctx.staging / "pareto.png").write_bytes(plot.result())
    metrics = {"fp32_metric": ws.fp32_metric, "evaluations": float(len(st.evaluated)), "search_seconds": search_seconds}
    if accepted_doc:
        metrics.update({"accepted_metric": accepted_doc["metric"], "accepted_cost": accepted_doc["cost"]})
        if accepted_doc["measured_ms_per_sample"] is not None:
            metrics["accepted_measured_ms_per_sample"] = accepted_doc["measured_ms_per_sample"]
    if corr is not None:
        metrics["latency_rank_correlation"] = corr
    return StepOutput(doc, metrics, ["pareto.png"], value=AMPReport(doc, ctx.final))


def run_amp(ws: Workspace, pool, tracker: Tracker | None, *, candidates: list[Precision],  # noqa: ANN001
            algorithm: str = "greedy", cost: str = "bops", objective: str = "multi", trials: int = 100,
            timeout: float | None = None, fresh: bool = False, measure: bool = True) -> AMPReport:
    """Step 3 on ``pool`` (see :class:`AMPStep`)."""
    step = AMPStep(ws, candidates, algorithm=algorithm, cost=cost, objective=objective, trials=trials,
                   timeout=timeout, fresh=fresh, measure=measure, workers=pool.size,
                   startup_seconds=getattr(pool, "startup_seconds", 0.0))
    return run_step(step, ws, pool, tracker, fresh).value
