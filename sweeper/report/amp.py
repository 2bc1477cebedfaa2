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
    thr = doc["fp32_metric"] - doc["max_drop"]
    ax.axhline(thr, color="#c62828", ls=":", lw=1.2, label=f"target (FP32 - {doc['max_drop']})")
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
