"""Step 2a: sensitivity analysis (AIMET's QuantAnalyzer, on the worker pool).

At a base precision: FP32 vs weights-only vs activations-only quantized; per quantizer group the metric
with only that group quantized (enable-one) and with all but that group quantized (disable-one); the
output SQNR of each group's layer vs FP32 on a calibration batch; weight and activation ranges.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sweeper.eval.target import Target
from sweeper.pipeline import Workspace
from sweeper.quant.precision import FP32, Precision
from sweeper.quant.profile import Profile
from sweeper.search.evaluate import Evaluated
from sweeper.search.step import Batch, PoolNeeds, Step, StepContext, StepOutput, run_step
from sweeper.sim.quantsim import probe_tensor
from sweeper.tracking.tracker import Tracker

RANKINGS = ("enable_one", "disable_one", "sqnr")


def analysis_precisions(base: Precision) -> tuple[str, ...]:
    return tuple(dict.fromkeys([FP32.name, base.name, base.weights_only().name, base.activations_only().name]))


def analysis_profiles(ws: Workspace, base: Precision) -> dict[str, Profile]:
    groups = [g.name for g in ws.graph.groups]
    fp32 = Profile.uniform(groups, FP32)
    all_base = Profile.uniform(groups, base)
    profiles = {"weights_only": Profile.uniform(groups, base.weights_only()),
                "activations_only": Profile.uniform(groups, base.activations_only()),
                "base": all_base}
    for g in groups:
        profiles[f"enable:{g}"] = fp32.with_groups({g: base})
        profiles[f"disable:{g}"] = all_base.with_groups({g: FP32})
    return profiles


def rank_groups(groups: list[dict[str, Any]], ranking: str, higher_is_better: bool) -> list[dict[str, Any]]:
    """Most sensitive first."""
    sign = 1.0 if higher_is_better else -1.0
    if ranking == "enable_one":  # the lower the metric with only this group quantized, the more sensitive
        key = lambda g: sign * g["enable_one"]  # noqa: E731
    elif ranking == "disable_one":  # the higher the metric when only this group stays float
        key = lambda g: -sign * g["disable_one"]  # noqa: E731
    elif ranking == "sqnr":
        key = lambda g: g["sqnr_db"] if g["sqnr_db"] is not None else np.inf  # noqa: E731
    else:
        raise ValueError(f"unknown ranking {ranking!r}: expected one of {', '.join(RANKINGS)}")
    ordered = sorted(groups, key=lambda g: (key(g), g["name"]))
    for i, g in enumerate(ordered, 1):
        g["rank"] = i
    return ordered


def _hist(ws: Workspace, tensor: str, bins: int = 64) -> dict[str, list[float]] | None:
    st = ws.stats.tensors.get(tensor)
    if st is None or st.hist is None or st.edges is None:
        return None
    counts = st.hist.reshape(bins, -1).sum(axis=1) if len(st.hist) % bins == 0 else st.hist
    edges = st.edges[:: len(st.hist) // len(counts)] if len(counts) != len(st.hist) else st.edges
    return {"counts": [int(c) for c in counts], "edges": [float(e) for e in edges]}


def interpret(summary: dict[str, float], target: Target) -> str:
    drop = target.drop
    w, a = drop(summary["weights_only"]), drop(summary["activations_only"])
    parts = [f"weights-only drop {w:+.4f}, activations-only drop {a:+.4f}, all quantized {drop(summary['base']):+.4f}."]
    if target.meets(summary["weights_only"]) and target.meets(summary["activations_only"]):
        parts.append("Neither weights nor activations alone break the target.")
    elif w > a:
        parts.append("Weights hurt more than activations: try higher weight bits (e.g. w8/w16) or AdaRound.")
    else:
        parts.append("Activations hurt more than weights: try 16-bit activations on the sensitive layers.")
    return " ".join(parts)


@dataclass
class AnalysisReport:
    doc: dict[str, Any]
    output: Path


def _group_doc(ws: Workspace, g: Any, results: dict[str, Evaluated], sqnr: dict[str, float]) -> dict[str, Any]:
    """One group's entry of sensitivity.json: its metrics, SQNR and weight/activation ranges."""
    def act(a: str) -> dict[str, Any]:
        st = ws.stats.tensors[a]
        return {"name": a, "min": float(st.min) if st.count else 0.0, "max": float(st.max) if st.count else 0.0,
                "sentinels": int(st.sentinels),
                # histograms matter where the encoding comes from them (mse/percentile)
                "hist": _hist(ws, a) if ws.exp.calibration.scheme != "minmax" else None}

    return {"name": g.name, "ops": g.ops, "macs": g.macs, "probe": probe_tensor(ws.graph, g.name),
            "enable_one": results[f"enable:{g.name}"].metric, "disable_one": results[f"disable:{g.name}"].metric,
            "sqnr_db": sqnr.get(g.name),
            "weights": [{"name": w, "min": float(ws.graph.weight_array(w).min()),
                         "max": float(ws.graph.weight_array(w).max())} for w in g.weights],
            "activations": [act(a) for a in g.activations]}


class AnalyzeStep(Step):
    """Step 2a as a :class:`~sweeper.search.step.Step`: two batches, each under the reference its profiles
    share prefixes with (workers then run most of them from stored activations): the base for
    disable-one (and weights-/activations-only), FP32 for enable-one; then SQNR probes and the report."""

    name = "analyze"
    strategy = "analyzer"
    export_each = False

    def __init__(self, ws: Workspace, base: Precision, ranking: str = "enable_one") -> None:
        if ranking not in RANKINGS:
            raise ValueError(f"unknown ranking {ranking!r}")
        self.ws, self.base, self.ranking = ws, base, ranking
        self.profiles = analysis_profiles(ws, base)
        order = [g.name for g in ws.graph.groups]
        enable = {f"enable:{g}": self.profiles[f"enable:{g}"] for g in reversed(order)}  # latest first:
        rest = {k: p for k, p in self.profiles.items() if k not in enable}  # it stores the most cuts on its way
        self.plan = [Batch(rest, self.profiles["base"]), Batch(enable, Profile.uniform(order, FP32))]
        self.results: dict[str, Evaluated] = {}

    def params(self) -> dict[str, Any]:
        return {"base": self.base.name, "ranking": self.ranking}

    def pool_needs(self) -> PoolNeeds:
        return PoolNeeds(analysis_precisions(self.base), probes=True, reuse=True)

    def propose(self) -> Batch | None:
        return self.plan.pop(0) if self.plan else None

    def observe(self, results: dict[str, Evaluated], profiles: dict[str, Profile]) -> None:
        self.results.update(results)

    def finish(self, ctx: StepContext) -> StepOutput:
        from sweeper.report.sensitivity import write_sensitivity_report

        ws, exp, pool, results = self.ws, self.ws.exp, ctx.pool, self.results
        names = [g.name for g in ws.graph.groups]
        calls = [(self.profiles[f"enable:{g}"].to_json(), probe_tensor(ws.graph, g)) for g in names]
        sqnr = {names[i]: float(v) for i, v in pool.map_calls("layer_sqnr", calls)}
        groups = [_group_doc(ws, g, results, sqnr) for g in ws.graph.groups]
        summary = {"fp32": ws.fp32_metric, **{k: results[k].metric for k in ("weights_only", "activations_only", "base")}}
        doc = {
            "experiment": exp.name, "metric": exp.metric, "higher_is_better": exp.higher_is_better,
            "base": self.base.name, "fp32_metric": ws.fp32_metric, "target": {"max_drop": exp.max_drop},
            "summary": summary, "interpretation": interpret(summary, ws.target),
            "ranking": self.ranking, "evaluations": len(self.profiles), "probes": len(calls),
            "groups": rank_groups(groups, self.ranking, exp.higher_is_better),
        }

        def render(plot_names: list[str]) -> dict[str, bytes | None]:
            got = pool.map_calls("render_plot", [(doc, n) for n in plot_names])
            return {plot_names[i]: png for i, png in got}

        files = write_sensitivity_report(doc, ctx.staging, render=render)
        return StepOutput(doc, {"fp32_metric": ws.fp32_metric, **{f"summary_{k}": v for k, v in summary.items()}},
                          [Path(p).name for p in files.values()], filename="sensitivity.json",
                          value=AnalysisReport(doc, ctx.final))


def run_analyze(ws: Workspace, pool, tracker: Tracker | None, base: Precision,  # noqa: ANN001
                ranking: str = "enable_one", fresh: bool = False) -> AnalysisReport:
    """Step 2a on ``pool`` (see :class:`AnalyzeStep`)."""
    return run_step(AnalyzeStep(ws, base, ranking), ws, pool, tracker, fresh).value


def format_analysis(doc: dict[str, Any], top: int = 15) -> str:
    s = doc["summary"]
    lines = [f"fp32 {s['fp32']:.4f} | weights-only {s['weights_only']:.4f} | activations-only "
             f"{s['activations_only']:.4f} | all at {doc['base']} {s['base']:.4f}", doc["interpretation"], "",
             f"{'rank':>4}  {'group':<48} {'enable-one':>10} {'disable-one':>11} {'SQNR dB':>8}"]
    for g in doc["groups"][:top]:
        name = g["name"] if len(g["name"]) <= 48 else "..." + g["name"][-45:]
        sq = f"{g['sqnr_db']:.1f}" if g["sqnr_db"] is not None else "-"
        lines.append(f"{g['rank']:>4}  {name:<48} {g['enable_one']:>10.4f} {g['disable_one']:>11.4f} {sq:>8}")
    if len(doc["groups"]) > top:
        lines.append(f"  ... {len(doc['groups']) - top} more groups in sensitivity.json")
    return "\n".join(lines)
