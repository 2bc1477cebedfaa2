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

from sweeper.pipeline import StagedOutput, Workspace
from sweeper.quant.precision import FP32, Precision
from sweeper.quant.profile import Profile
from sweeper.search.evaluate import Sweep, write_json
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


def interpret(summary: dict[str, float], fp32: float, max_drop: float, higher: bool) -> str:
    def drop(m: float) -> float:
        return (fp32 - m) if higher else (m - fp32)

    w, a = drop(summary["weights_only"]), drop(summary["activations_only"])
    parts = [f"weights-only drop {w:+.4f}, activations-only drop {a:+.4f}, all quantized {drop(summary['base']):+.4f}."]
    if max(w, a) <= max_drop:
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


def run_analyze(ws: Workspace, pool, tracker: Tracker | None, base: Precision,  # noqa: ANN001
                ranking: str = "enable_one", fresh: bool = False) -> AnalysisReport:
    from sweeper.report.sensitivity import write_sensitivity_report

    exp = ws.exp
    if ranking not in RANKINGS:
        raise ValueError(f"unknown ranking {ranking!r}")
    profiles = analysis_profiles(ws, base)
    out = StagedOutput(exp.output, "analyze")
    try:
        sweep = Sweep(ws, "analyze", "analyzer", out.path, tracker, fresh=fresh, export=False,
                      params={"base": base.name, "ranking": ranking})
        # two calls, each under the reference its profiles share prefixes with (workers then run most of
        # them from stored activations): the base for disable-one, FP32 for enable-one
        groups_order = [g.name for g in ws.graph.groups]
        enable = {f"enable:{g}": profiles[f"enable:{g}"] for g in reversed(groups_order)}  # latest first:
        rest = {k: p for k, p in profiles.items() if k not in enable}  # it stores the most cuts on its way
        results = sweep.evaluate(pool, rest, reference=profiles["base"])
        results.update(sweep.evaluate(pool, enable, reference=Profile.uniform(groups_order, FP32)))
        names = [g.name for g in ws.graph.groups]
        tensors = [probe_tensor(ws.graph, g) for g in names]
        calls = [(profiles[f"enable:{g}"].to_json(), t) for g, t in zip(names, tensors, strict=True)]
        sqnr = {names[i]: float(v) for i, v in pool.map_calls("layer_sqnr", calls)}
        groups = []
        for g in ws.graph.groups:
            groups.append({
                "name": g.name, "ops": g.ops, "macs": g.macs, "probe": probe_tensor(ws.graph, g.name),
                "enable_one": results[f"enable:{g.name}"].metric, "disable_one": results[f"disable:{g.name}"].metric,
                "sqnr_db": sqnr.get(g.name),
                "weights": [{"name": w, "min": float(ws.graph.weight_array(w).min()),
                             "max": float(ws.graph.weight_array(w).max())} for w in g.weights],
                "activations": [{"name": a, "min": float(ws.stats.tensors[a].min) if ws.stats.tensors[a].count else 0.0,
                                 "max": float(ws.stats.tensors[a].max) if ws.stats.tensors[a].count else 0.0,
                                 "sentinels": int(ws.stats.tensors[a].sentinels),
                                 # histograms matter where the encoding comes from them (mse/percentile)
                                 "hist": _hist(ws, a) if exp.calibration.scheme != "minmax" else None}
                                for a in g.activations],
            })
        summary = {"fp32": ws.fp32_metric, **{k: results[k].metric for k in ("weights_only", "activations_only", "base")}}
        doc = {
            "experiment": exp.name, "metric": exp.metric, "higher_is_better": exp.higher_is_better,
            "base": base.name, "fp32_metric": ws.fp32_metric, "target": {"max_drop": exp.max_drop},
            "summary": summary, "interpretation": interpret(summary, ws.fp32_metric, exp.max_drop, exp.higher_is_better),
            "ranking": ranking, "evaluations": len(profiles), "probes": len(calls),
            "groups": rank_groups(groups, ranking, exp.higher_is_better),
        }
        write_json(out.path / "sensitivity.json", doc)
        def render(names: list[str]) -> dict[str, bytes | None]:
            calls = [(doc, n) for n in names]
            return {names[i]: png for i, png in pool.map_calls("render_plot", calls)}

        files = write_sensitivity_report(doc, out.path, render=render)
        sweep.flush()  # exports and records land in the staging folder before it moves
        final = out.commit()
        sweep.finish({"fp32_metric": ws.fp32_metric, **{f"summary_{k}": v for k, v in summary.items()}},
                     [final / "sensitivity.json"] + [final / Path(p).name for p in files.values()])
    except BaseException:
        out.abort()
        raise
    return AnalysisReport(doc, final)


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
