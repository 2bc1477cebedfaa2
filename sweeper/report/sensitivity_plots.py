"""The sensitivity report's plots (summary, per-group sensitivity, SQNR, ranges, histograms) as PNG, drawn with
the object-oriented API on an Agg canvas: no pyplot, so no global backend switch and no figure registry.
:func:`render_plot` is a pure function of the document, so idle workers can draw the plots in parallel."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from sweeper.report.sensitivity_view import (
    MAX_BARS,
    SensitivityView,
    middle_truncate,
    num,
    ok,
    range_of,
    sentinels,
    shorten_names,
)

DPI = 110
MAX_HISTS = 12  # small multiples in histograms.png

# colours
C_BAD, C_OK, C_NEUTRAL = "#d62728", "#1f77b4", "#9e9e9e"
C_GAIN, C_WEIGHT, C_ACT, C_SQNR = "#2ca02c", "#1f77b4", "#ff7f0e", "#6a51a3"


# -- figures ----------------------------------------------------------------------------------
def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, facecolor="white")
    fig.clear()
    return path


def _bar_height(n: int) -> float:
    return 1.5 + 0.27 * max(n, 3)


def _note(fig: Figure, text: str) -> None:
    if text:
        fig.supxlabel(text, fontsize=8.5, color="#555555", style="italic")


def _annotate_bars(ax: Any, ys: Any, vals: Sequence[float], fmt: str) -> None:
    lo, hi = ax.get_xlim()
    pad = 0.01 * (hi - lo)
    for y, v in zip(ys, vals, strict=True):
        if ok(v):
            ax.text(v + (pad if v >= 0 else -pad), float(y), format(v, fmt), va="center",
                    ha="left" if v >= 0 else "right", fontsize=7, color="#333333", clip_on=False,
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.75, "pad": 0.6})


def _pad_xlim(ax: Any, vals: Sequence[float], extra: Sequence[float] = ()) -> None:
    xs = [v for v in [*vals, *extra, 0.0] if ok(v)]
    lo, hi = min(xs), max(xs)
    span = (hi - lo) or max(abs(hi), 1e-6)
    ax.set_xlim(lo - (0.18 * span if lo < 0 else 0.02 * span), hi + 0.18 * span)


def _plot_summary(v: SensitivityView, path: Path) -> Path | None:
    keys = [("fp32", "FP32"), ("weights_only", "weights only"), ("activations_only", "activations only"),
            ("base", f"all at {v.base}")]
    keys = [(k, lbl) for k, lbl in keys if ok(v.summary.get(k, math.nan))]
    if not keys:
        return None
    vals = [v.summary[k] for k, _ in keys]
    fig = _figure(9.5, 4.6)
    ax = fig.add_subplot()
    thr = v.threshold if ok(v.max_drop) and ok(v.fp32) else math.nan
    lo, hi = min([*vals, *([thr] if ok(thr) else [])]), max([*vals, *([thr] if ok(thr) else [])])
    span = (hi - lo) or max(abs(hi) * 0.01, 1e-6)
    y0, y1 = lo - 0.6 * span, hi + 0.45 * span
    if lo >= 0 > y0:  # the zoom would reach below 0 anyway: start at 0
        y0 = 0.0
    colors = []
    for (k, _), val in zip(keys, vals, strict=True):
        if k == "fp32" or not (ok(v.max_drop) and ok(v.fp32)):
            colors.append(C_NEUTRAL)
        else:
            colors.append(C_GAIN if v.drop(val) <= v.max_drop else C_BAD)
    xs = np.arange(len(keys))
    ax.bar(xs, [val - y0 for val in vals], bottom=y0, color=colors, width=0.6)
    for x, (k, _), val in zip(xs, keys, vals, strict=True):
        txt = f"{val:.4f}" if k == "fp32" or not ok(v.fp32) else f"{val:.4f}\n(drop {v.drop(val):+.4f})"
        ax.text(float(x), val + 0.03 * span, txt, ha="center", va="bottom", fontsize=9,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1.0})
    if ok(thr):
        ax.axhline(thr, color=C_BAD, ls="--", lw=1.3)
    ax.set_xticks(xs, [lbl for _, lbl in keys], fontsize=10)
    ax.set_ylim(y0, y1)
    ax.set_xlim(-0.6, len(keys) - 0.4)
    ax.set_ylabel(f"{v.metric} ({'higher' if v.higher else 'lower'} is better)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.set_title(f"{v.experiment}: what breaks at {v.base}?", fontsize=11.5)
    handles = [Patch(color=C_GAIN, label="meets target"), Patch(color=C_BAD, label="misses target"),
               Line2D([], [], color=C_BAD, ls="--", lw=1.3,
                      label=f"target {thr:.4f} (FP32 {'−' if v.higher else '+'} {v.max_drop:g})")]
    if ok(thr):
        ax.legend(handles=handles, fontsize=8.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _note(fig, "y axis is zoomed: it does not start at 0" if y0 != 0 else "")
    return _save(fig, path)


def _plot_sensitivity(v: SensitivityView, path: Path) -> Path | None:
    idx = v.shown()
    if not idx:
        return None
    ys = np.arange(len(idx))
    drops = [v.enable_drop[i] for i in idx]
    gains = [v.disable_gain[i] for i in idx]
    fig = _figure(12.5, _bar_height(len(idx)) + 0.3)
    ax1, ax2 = fig.subplots(1, 2, sharey=True)
    md = v.max_drop
    c1 = [C_BAD if ok(md) and ok(d) and d > md else C_OK for d in drops]
    ax1.barh(ys, [d if ok(d) else 0.0 for d in drops], color=c1, height=0.7)
    if ok(md):
        ax1.axvline(md, color=C_BAD, ls="--", lw=1.2, label=f"target max_drop = {md:g}")
        ax1.legend(fontsize=8, loc="best", framealpha=0.9)
    ax1.axvline(0, color="black", lw=0.8)
    _pad_xlim(ax1, drops, [md])
    _annotate_bars(ax1, ys, drops, "+.4f")
    ax1.set_yticks(ys, [v.axis_label(i) for i in idx], fontsize=8.5 if len(idx) <= 20 else 7.5)
    ax1.set_ylim(len(idx) - 0.5, -0.5)
    ax1.set_xlabel(f"{v.metric} drop vs FP32 ({v.fp32:.4f})  →  worse")
    ax1.set_title(f"enable-one: only this group at {v.base}", fontsize=10.5)
    c2 = [C_GAIN if ok(g) and g > 0 else C_NEUTRAL for g in gains]
    ax2.barh(ys, [g if ok(g) else 0.0 for g in gains], color=c2, height=0.7)
    ax2.axvline(0, color="black", lw=0.8)
    _pad_xlim(ax2, gains)
    _annotate_bars(ax2, ys, gains, "+.4f")
    ax2.set_xlabel(f"{v.metric} recovered vs all at {v.base} ({v.base_metric:.4f})  →  better")
    ax2.set_title("disable-one: only this group left FP32", fontsize=10.5)
    ax2.tick_params(axis="y", left=False)
    for ax in (ax1, ax2):
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
    fig.suptitle(f"{v.experiment}: per-group sensitivity at {v.base} (ranked by {v.ranking})", fontsize=12)
    _note(fig, v.more_note())
    return _save(fig, path)


def _plot_sqnr(v: SensitivityView, path: Path) -> Path | None:
    have = [i for i, g in enumerate(v.groups) if ok(num(g.get("sqnr_db")))]
    if not have:
        return None
    idx = have[:MAX_BARS]
    vals = [num(v.groups[i].get("sqnr_db")) for i in idx]
    ys = np.arange(len(idx))
    fig = _figure(9.5, _bar_height(len(idx)))
    ax = fig.add_subplot()
    ax.barh(ys, vals, color=C_SQNR, height=0.7)
    ax.axvline(0, color="black", lw=0.8)
    _pad_xlim(ax, vals)
    _annotate_bars(ax, ys, vals, ".1f")
    ax.set_yticks(ys, [v.axis_label(i) for i in idx], fontsize=8.5 if len(idx) <= 20 else 7.5)
    ax.set_ylim(len(idx) - 0.5, -0.5)
    ax.set_xlabel("output SQNR vs FP32 [dB]  (higher = less quantization noise; ≈ 6 dB per bit)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    ax.set_title(f"{v.experiment}: layer output SQNR at {v.base} (ranked by {v.ranking})", fontsize=11.5)
    notes = []
    if len(have) > MAX_BARS:
        notes.append(f"showing the {MAX_BARS} most sensitive of {len(have)} groups with an SQNR")
    if len(have) < len(v.groups):
        notes.append(f"{len(v.groups) - len(have)} group(s) without SQNR omitted")
    _note(fig, "; ".join(notes))
    return _save(fig, path)


def _plot_ranges(v: SensitivityView, path: Path) -> Path | None:
    idx = v.shown()
    rows = []
    for i in idx:
        g = v.groups[i]
        acts = list(g.get("activations") or [])
        rows.append((range_of(list(g.get("weights") or [])), range_of(acts), sentinels(acts)))
    if not any(w or a for w, a, _ in rows):
        return None
    ys = np.arange(len(idx))
    fig = _figure(10.5, _bar_height(len(idx)))
    ax = fig.add_subplot()
    off = 0.17
    for y, (w, a, sent) in zip(ys, rows, strict=True):
        if w:
            ax.hlines(y - off, w[0], w[1], color=C_WEIGHT, lw=4)
            ax.plot(w, [y - off] * 2, "|", color=C_WEIGHT, ms=7)
        if a:
            ax.hlines(y + off, a[0], a[1], color=C_ACT, lw=4)
            ax.plot(a, [y + off] * 2, "|", color=C_ACT, ms=7)
            if sent:
                ax.plot([a[1]], [y + off], marker="x", color=C_BAD, ms=8, mew=2, ls="none")
    ends = [abs(x) for w, a, _ in rows for r in (w, a) if r for x in r if ok(x)]
    mags = [max(abs(r[0]), abs(r[1])) for w, a, _ in rows for r in (w, a) if r]
    mags = [m for m in mags if m > 0]
    log_note = ""
    if mags and max(ends) / min(mags) > 100:
        linthresh = 10 ** math.floor(math.log10(min(mags)))
        ax.set_xscale("symlog", linthresh=linthresh)
        log_note = f"symlog x axis (linear within ±{linthresh:g}): ranges span orders of magnitude"
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(ys, [v.axis_label(i) for i in idx], fontsize=8.5 if len(idx) <= 20 else 7.5)
    ax.set_ylim(len(idx) - 0.5, -0.5)
    ax.set_xlabel("value range (min … max)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    handles = [Line2D([], [], color=C_WEIGHT, lw=4, label="weights"),
               Line2D([], [], color=C_ACT, lw=4, label="activations")]
    if any(s for _, _, s in rows):
        handles.append(Line2D([], [], color=C_BAD, marker="x", ls="none", mew=2,
                              label="activation has masking sentinels (excluded)"))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(f"{v.experiment}: weight and activation ranges per group (ranked by {v.ranking})", fontsize=11.5)
    _note(fig, "; ".join(t for t in (log_note, v.more_note()) if t))
    return _save(fig, path)


def _hists_of(g: dict[str, Any]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    out = []
    for a in g.get("activations") or []:
        h = a.get("hist") or None
        if not h:
            continue
        counts = np.asarray(h.get("counts") or [], dtype=float)
        edges = np.asarray(h.get("edges") or [], dtype=float)
        if counts.size and edges.size == counts.size + 1 and np.all(np.isfinite(edges)) and counts.sum() > 0:
            out.append((str(a.get("name", "")), counts, edges))
    return out


def _plot_histograms(v: SensitivityView, path: Path) -> Path | None:
    chosen = [(i, h) for i, g in enumerate(v.groups) if (h := _hists_of(g))][:MAX_HISTS]
    if not chosen:
        return None
    ncols = min(4, len(chosen))
    nrows = math.ceil(len(chosen) / ncols)
    fig = _figure(3.3 * ncols + 0.4, 2.55 * nrows + 0.7)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    colors = [C_ACT, C_OK, C_GAIN]
    for ax, (i, hists) in zip(axes, chosen, strict=False):
        short = shorten_names([n for n, _, _ in hists], 40 if len(hists) == 1 else 26)
        for (_, counts, edges), lbl, c in zip(hists[:3], short, colors, strict=False):
            ax.stairs(np.maximum(counts, 0.8), edges, baseline=0.8, fill=True, alpha=0.45, color=c, label=lbl)
            ax.stairs(np.maximum(counts, 0.8), edges, baseline=0.8, color=c, lw=0.8)
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.8)
        ax.axvline(0, color="black", lw=0.6, alpha=0.6)
        sub = f"activation: {short[0]}" if len(hists) == 1 else f"{len(hists)} activations"
        ax.set_title(f"{middle_truncate(v.axis_label(i), 46)}\n{sub}", fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
        if len(hists) > 1:
            ax.legend(fontsize=6.5, loc="upper right", framealpha=0.8, handlelength=1.0,
                      title=None if len(hists) <= 3 else f"{len(hists) - 3} more not shown", title_fontsize=6)
    for ax in axes[len(chosen):]:
        ax.axis("off")
    fig.suptitle(f"{v.experiment}: activation histograms of the {len(chosen)} most sensitive groups "
                 f"(log count)", fontsize=11.5)
    fig.supylabel("count (log)", fontsize=9)
    fig.supxlabel("activation value (calibration data)", fontsize=9)
    return _save(fig, path)



# -- entry point ------------------------------------------------------------------------------
def render_plot(doc: dict[str, Any], name: str) -> bytes | None:
    """One plot of the report as PNG bytes (None when it has nothing to show). Pure function of ``doc``, so
    it can run anywhere, e.g. on idle workers in parallel."""
    import tempfile

    makers = {"summary": _plot_summary, "sensitivity": _plot_sensitivity, "sqnr": _plot_sqnr,
              "ranges": _plot_ranges, "histograms": _plot_histograms}
    with tempfile.TemporaryDirectory() as tmp:
        path = makers[name](SensitivityView(doc), Path(tmp) / f"{name}.png")
        return path.read_bytes() if path is not None else None
