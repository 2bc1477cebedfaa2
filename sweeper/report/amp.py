"""The AMP report plot."""

from __future__ import annotations

from typing import Any


def render_pareto(doc: dict[str, Any]) -> bytes:
    """The AMP plot (metric vs cost of every evaluated profile, the greedy Pareto list, the front, the
    target and the accepted profile) as PNG bytes. A pure function of the results document, so an idle
    worker can draw it while the driver exports."""
    import io

    cost = doc["cost"]
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    pts = doc["all"]
    ax.scatter([p["cost"] for p in pts], [p["metric"] for p in pts], s=12, color="#9aa7b8", label="evaluated")
    if doc.get("greedy"):
        gl = [(e["cost"], e["metric"]) for e in doc["greedy"]["pareto_list"] if e["metric"] is not None]
        if gl:
            ax.plot(*zip(*gl, strict=True), "o--", color="#c9822b", ms=4, lw=1, label="greedy Pareto list (evaluated)")
    fr = doc["pareto_front"]
    ax.plot([f["cost"] for f in fr], [f["metric"] for f in fr], "s-", color="#2b6cc9", ms=5, lw=1.5,
            label="Pareto front")
    thr = doc.get("threshold", doc["fp32_metric"] - doc["max_drop"])  # Target.threshold (either direction)
    ax.axhline(thr, color="#c62828", ls=":", lw=1.2, label=f"target {thr:.4g} (max drop {doc['max_drop']})")
    if doc["accepted"]:
        a = doc["accepted"]
        ax.scatter([a["cost"]], [a["metric"]], marker="*", s=220, color="#1b7a1b", zorder=5,
                   label=f"accepted: {a['profile']}")
    ax.set_xlabel({"bops": "BOPs relative to uniform w8a8", "bytes": "MB moved per sample",
                   "latency": "estimated latency (ms)"}[cost])
    ax.set_ylabel(doc["metric"])
    ax.set_title(f"{doc['experiment']}: AMP ({doc['algorithm']}), {doc['evaluations']} evaluations")
    lo = min([p["metric"] for p in pts] + [thr])
    ax.set_ylim(max(lo, thr - 5 * max(doc["max_drop"], 1e-3)), None)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    return buf.getvalue()


def format_amp(d: dict[str, Any], metric: str, output: Any) -> str:
    """The AMP summary the CLI prints: the Pareto front with estimated and measured latency, the accepted
    profile, and where the results are."""
    metric = metric.rsplit(":", 1)[-1][:10]
    lines = [f"\nStep 3 - AMP ({d['algorithm']}, cost {d['cost']}): {d['experiment']}, candidates "
             f"{', '.join(d['candidates'])}, FP32 {d['fp32_metric']:.4f}, max drop {d['max_drop']}",
             f"{d['evaluations']} profiles evaluated in {d['search_seconds']:.1f}s",
             f"\nPareto front ({len(d['pareto_front'])} profiles; latency in ms per sample):",
             f"  {'cost':>8} {metric:>10} {'est ms':>9} {'measured ms':>11}  profile"]
    for f in d["pareto_front"]:
        meas = f"{f['measured_latency_ms']:.4f}" if f.get("measured_latency_ms") is not None else "-"
        lines.append(f"  {f['cost']:>8.3f} {f['metric']:>10.4f} {f['est_latency_ms']:>9.4f} {meas:>11}  {f['profile']}")
    a = d["accepted"]
    if a:
        measured = (f", measured {a['measured_latency_ms']:.4f} ms" if a.get("measured_latency_ms") is not None else "")
        lines += [f"\naccepted: {a['profile']}  {metric} {a['metric']:.4f} (drop {a['drop']:+.4f}), cost {a['cost']:.3f}, "
                  f"BOPs {a['bops_ratio']:.2f}x w8a8, est {a['est_latency_ms']:.4f} ms{measured}",
                  f"cheapest passing uniform candidate: {d['cheapest_passing_uniform']}", f"exported: {a['onnx']}"]
        note = ((d.get("latency") or {}).get("check") or {}).get("note")
        if note:
            lines.append(f"latency check: {note}")
    else:
        lines.append("\nno evaluated profile meets the target")
    if d.get("latency_rank_correlation") is not None:
        lines.append(f"rank correlation of estimated vs measured latency over the front: "
                     f"{d['latency_rank_correlation']:.2f}")
        if (note := (d.get("latency") or {}).get("estimate_note")):
            lines.append(f"note: {note}")
    lines.append(f"results: {output}/results.json  plot: {output}/pareto.png")
    return "\n".join(lines)
