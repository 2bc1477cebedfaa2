"""Sensitivity-analysis report: PNG plots plus one self-contained ``report.html``.

``write_sensitivity_report(doc, out_dir)`` takes the document written by the analyzer
(``sensitivity.json``: summary, interpretation and the ranked quantizer groups) and writes

* ``summary.png``     FP32 / weights-only / activations-only / all-quantized metric vs the target,
* ``sensitivity.png`` per group: drop vs FP32 with only that group quantized (enable-one) and the
                      metric recovered when only that group stays FP32 (disable-one),
* ``sqnr.png``        per-group output SQNR (skipped when no group has one),
* ``ranges.png``      per-group weight and activation min-max intervals,
* ``histograms.png``  activation histograms of the most sensitive groups (skipped when there are none),
* ``report.html``     all of the above (PNGs inlined as data URIs) plus a table of every group.

The PNG files stay beside the HTML so they can be logged as separate artifacts. Figures are built with
the object-oriented API on an Agg canvas: no pyplot, so no global backend switch and no figure registry.
"""

from __future__ import annotations

import base64
import html
import math
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

DPI = 110
MAX_BARS = 40  # groups shown in the per-group plots (the most sensitive ones)
MAX_HISTS = 12  # small multiples in histograms.png
LABEL_CHARS = 40  # axis labels are shortened to about this many characters

# colours
C_BAD, C_OK, C_NEUTRAL = "#d62728", "#1f77b4", "#9e9e9e"
C_GAIN, C_WEIGHT, C_ACT, C_SQNR = "#2ca02c", "#1f77b4", "#ff7f0e", "#6a51a3"

PLOTS = ("summary", "sensitivity", "sqnr", "ranges", "histograms")


# -- names ------------------------------------------------------------------------------------
def _middle_truncate(s: str, width: int) -> str:
    if len(s) <= width:
        return s
    tail = (width - 1) * 2 // 3  # the end of an ONNX name distinguishes more than its start
    return s[: width - 1 - tail] + "…" + s[-tail:]


def _has_digit(s: str) -> bool:
    return any(ch.isdigit() for ch in s)


def shorten_names(names: Sequence[str], max_chars: int = LABEL_CHARS) -> list[str]:
    """Short axis labels for ONNX node/tensor names, keeping the distinguishing tail.

    Each name keeps the fewest trailing ``/`` components (at least two) that no other name in ``names``
    ends with, e.g. ``/bert/encoder/layer.4/attention/self/MatMul_1`` -> ``layer.4/attention/self/MatMul_1``
    when other layers have the same ``attention/self/MatMul_1``. Too long a tail keeps the distinguishing
    component and as many of the last ones as fit (``layer.11/…/output/dense/MatMul``), then is cut in
    the middle. A tail with no
    numbered component reaches back to the nearest numbered one (``layer.11/attention/output/dense/MatMul``
    rather than ``dense/MatMul``) before that condensing.
    """
    parts = [[p for p in n.split("/") if p] or [n] for n in names]
    depth = max((len(p) for p in parts), default=1)
    tails = {k: Counter(tuple(p[-k:]) for p in parts) for k in range(1, depth + 1)}
    out = []
    for p in parts:
        k = min(2, len(p))
        while k < len(p) and tails[k][tuple(p[-k:])] > 1:
            k += 1
        # a tail without any index (``output/dense/MatMul``) reads ambiguously: reach back to the nearest
        # component that has one (``layer.11``) when there is one
        if not any(_has_digit(c) for c in p[-k:-1]):  # the op's own suffix (MatMul_1) is no index
            k = next((j for j in range(k + 1, len(p) + 1) if _has_digit(p[-j])), k)
        label = "/".join(p[-k:])
        if len(label) > max_chars and k >= 3:
            for keep_end in range(k - 2, 0, -1):  # distinguishing component + as much of the end as fits
                cand = p[-k] + "/…/" + "/".join(p[-keep_end:])
                if len(cand) <= max_chars or keep_end == 1:
                    label = cand
                    break
        out.append(_middle_truncate(label, max_chars))
    return out


# -- numbers ----------------------------------------------------------------------------------
def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def _ok(v: float) -> bool:
    return v is not None and math.isfinite(v)


def _fmt(v: Any, spec: str = ".4f") -> str:
    f = _num(v)
    return format(f, spec) if math.isfinite(f) else "–"


def _range_of(items: list[dict[str, Any]]) -> tuple[float, float] | None:
    lo = [_num(i.get("min")) for i in items]
    hi = [_num(i.get("max")) for i in items]
    lo, hi = [v for v in lo if _ok(v)], [v for v in hi if _ok(v)]
    if not lo or not hi:
        return None
    return min(lo), max(hi)


def _sentinels(acts: list[dict[str, Any]]) -> int:
    return sum(int(n) for a in acts if _ok(n := _num(a.get("sentinels"))))


# -- document view ----------------------------------------------------------------------------
class _View:
    """The document with derived per-group quantities (drops in 'positive = worse' orientation)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.higher = bool(doc.get("higher_is_better", True))
        self.sign = 1.0 if self.higher else -1.0
        self.summary = {k: _num(v) for k, v in (doc.get("summary") or {}).items()}
        self.fp32 = _num(doc.get("fp32_metric", self.summary.get("fp32")))
        if not _ok(self.fp32):
            self.fp32 = self.summary.get("fp32", math.nan)
        self.base_metric = self.summary.get("base", math.nan)
        self.max_drop = _num((doc.get("target") or {}).get("max_drop"))
        self.metric = str(doc.get("metric", "metric"))
        self.base = str(doc.get("base", "base"))
        self.ranking = str(doc.get("ranking", "enable_one"))
        self.experiment = str(doc.get("experiment", ""))
        order = sorted(enumerate(doc.get("groups") or []), key=lambda ig: (_num(ig[1].get("rank", ig[0] + 1)), ig[0]))
        self.groups: list[dict[str, Any]] = [g for _, g in order]
        self.ranks = [int(_num(g.get("rank"))) if _ok(_num(g.get("rank"))) else i + 1
                      for i, g in enumerate(self.groups)]
        self.names = [str(g.get("name", f"group {i + 1}")) for i, g in enumerate(self.groups)]
        self.labels = shorten_names(self.names)
        self.enable_drop = [self.drop(_num(g.get("enable_one"))) for g in self.groups]
        self.disable_gain = [self.sign * (_num(g.get("disable_one")) - self.base_metric) for g in self.groups]

    def drop(self, m: float) -> float:
        """Metric drop vs FP32, positive = worse."""
        return self.sign * (self.fp32 - m)

    @property
    def threshold(self) -> float:
        return self.fp32 - self.sign * self.max_drop

    def axis_label(self, i: int) -> str:
        return f"#{self.ranks[i]}  {self.labels[i]}"

    def shown(self) -> list[int]:
        return list(range(min(len(self.groups), MAX_BARS)))

    def more_note(self) -> str:
        n = len(self.groups)
        return f"showing the {MAX_BARS} most sensitive of {n} groups (by {self.ranking}); all are in the table" \
            if n > MAX_BARS else ""


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
        if _ok(v):
            ax.text(v + (pad if v >= 0 else -pad), float(y), format(v, fmt), va="center",
                    ha="left" if v >= 0 else "right", fontsize=7, color="#333333", clip_on=False,
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.75, "pad": 0.6})


def _pad_xlim(ax: Any, vals: Sequence[float], extra: Sequence[float] = ()) -> None:
    xs = [v for v in [*vals, *extra, 0.0] if _ok(v)]
    lo, hi = min(xs), max(xs)
    span = (hi - lo) or max(abs(hi), 1e-6)
    ax.set_xlim(lo - (0.18 * span if lo < 0 else 0.02 * span), hi + 0.18 * span)


def _plot_summary(v: _View, path: Path) -> Path | None:
    keys = [("fp32", "FP32"), ("weights_only", "weights only"), ("activations_only", "activations only"),
            ("base", f"all at {v.base}")]
    keys = [(k, lbl) for k, lbl in keys if _ok(v.summary.get(k, math.nan))]
    if not keys:
        return None
    vals = [v.summary[k] for k, _ in keys]
    fig = _figure(9.5, 4.6)
    ax = fig.add_subplot()
    thr = v.threshold if _ok(v.max_drop) and _ok(v.fp32) else math.nan
    lo, hi = min([*vals, *([thr] if _ok(thr) else [])]), max([*vals, *([thr] if _ok(thr) else [])])
    span = (hi - lo) or max(abs(hi) * 0.01, 1e-6)
    y0, y1 = lo - 0.6 * span, hi + 0.45 * span
    if lo >= 0 > y0:  # the zoom would reach below 0 anyway: start at 0
        y0 = 0.0
    colors = []
    for (k, _), val in zip(keys, vals, strict=True):
        if k == "fp32" or not (_ok(v.max_drop) and _ok(v.fp32)):
            colors.append(C_NEUTRAL)
        else:
            colors.append(C_GAIN if v.drop(val) <= v.max_drop else C_BAD)
    xs = np.arange(len(keys))
    ax.bar(xs, [val - y0 for val in vals], bottom=y0, color=colors, width=0.6)
    for x, (k, _), val in zip(xs, keys, vals, strict=True):
        txt = f"{val:.4f}" if k == "fp32" or not _ok(v.fp32) else f"{val:.4f}\n(drop {v.drop(val):+.4f})"
        ax.text(float(x), val + 0.03 * span, txt, ha="center", va="bottom", fontsize=9,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1.0})
    if _ok(thr):
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
    if _ok(thr):
        ax.legend(handles=handles, fontsize=8.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _note(fig, "y axis is zoomed: it does not start at 0" if y0 != 0 else "")
    return _save(fig, path)


def _plot_sensitivity(v: _View, path: Path) -> Path | None:
    idx = v.shown()
    if not idx:
        return None
    ys = np.arange(len(idx))
    drops = [v.enable_drop[i] for i in idx]
    gains = [v.disable_gain[i] for i in idx]
    fig = _figure(12.5, _bar_height(len(idx)) + 0.3)
    ax1, ax2 = fig.subplots(1, 2, sharey=True)
    md = v.max_drop
    c1 = [C_BAD if _ok(md) and _ok(d) and d > md else C_OK for d in drops]
    ax1.barh(ys, [d if _ok(d) else 0.0 for d in drops], color=c1, height=0.7)
    if _ok(md):
        ax1.axvline(md, color=C_BAD, ls="--", lw=1.2, label=f"target max_drop = {md:g}")
        ax1.legend(fontsize=8, loc="best", framealpha=0.9)
    ax1.axvline(0, color="black", lw=0.8)
    _pad_xlim(ax1, drops, [md])
    _annotate_bars(ax1, ys, drops, "+.4f")
    ax1.set_yticks(ys, [v.axis_label(i) for i in idx], fontsize=8.5 if len(idx) <= 20 else 7.5)
    ax1.set_ylim(len(idx) - 0.5, -0.5)
    ax1.set_xlabel(f"{v.metric} drop vs FP32 ({v.fp32:.4f})  →  worse")
    ax1.set_title(f"enable-one: only this group at {v.base}", fontsize=10.5)
    c2 = [C_GAIN if _ok(g) and g > 0 else C_NEUTRAL for g in gains]
    ax2.barh(ys, [g if _ok(g) else 0.0 for g in gains], color=c2, height=0.7)
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


def _plot_sqnr(v: _View, path: Path) -> Path | None:
    have = [i for i, g in enumerate(v.groups) if _ok(_num(g.get("sqnr_db")))]
    if not have:
        return None
    idx = have[:MAX_BARS]
    vals = [_num(v.groups[i].get("sqnr_db")) for i in idx]
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


def _plot_ranges(v: _View, path: Path) -> Path | None:
    idx = v.shown()
    rows = []
    for i in idx:
        g = v.groups[i]
        acts = list(g.get("activations") or [])
        rows.append((_range_of(list(g.get("weights") or [])), _range_of(acts), _sentinels(acts)))
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
    ends = [abs(x) for w, a, _ in rows for r in (w, a) if r for x in r if _ok(x)]
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


def _plot_histograms(v: _View, path: Path) -> Path | None:
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
        ax.set_title(f"{_middle_truncate(v.axis_label(i), 46)}\n{sub}", fontsize=8, loc="left")
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


# -- HTML -------------------------------------------------------------------------------------
_CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1300px;
     padding:0 16px;color:#222;line-height:1.4}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
.meta{color:#555;margin-top:0}
table{border-collapse:collapse;font-size:13px;margin:.6em 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right;vertical-align:top}
th{background:#f3f3f3;position:sticky;top:0}
td.name{text-align:left;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all;
        max-width:520px}
tr.bad td{background:#fdecea} tr:hover td{background:#eef4fb}
.pass{color:#1b7a1b;font-weight:600} .fail{color:#c62828;font-weight:600}
.interp{background:#f7f7f2;border-left:4px solid #c9b458;padding:8px 12px;max-width:900px}
figure{margin:1.2em 0} figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#444;font-size:14px;margin-top:4px;max-width:1000px}
.small{color:#666;font-size:12px}
"""

_HEADINGS = {"summary": "Weights vs activations", "sensitivity": "Per-group sensitivity",
             "sqnr": "Layer output SQNR", "ranges": "Weight and activation ranges",
             "histograms": "Activation histograms"}

_CAPTIONS = {
    "summary": "Metric with everything FP32, only the weights quantized, only the activations quantized and "
               "everything at {base}; the dashed line is the target (FP32 {op} max_drop) — a red bar misses it.",
    "sensitivity": "Left: drop vs FP32 when only this group is quantized (longer = more sensitive; red = beyond "
                   "max_drop, dashed line). Right: metric recovered when only this group stays FP32 while "
                   "everything else is at {base} (longer = keeping it float helps more). Ordered by rank.",
    "sqnr": "Output SQNR of each group's layer vs FP32 on a calibration batch: lower dB = more quantization noise "
            "(about 6 dB per bit); look for groups far below the rest.",
    "ranges": "Min–max interval of each group's weights (blue, upper) and activations (orange, lower): wide or "
              "lopsided ranges spread the quantization grid thin; a red × marks masking sentinels left out.",
    "histograms": "Activation value distributions of the most sensitive groups (log counts): long tails and "
                  "outliers stretch the min–max grid and cost resolution for the bulk of the values.",
}


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _range_cell(items: list[dict[str, Any]]) -> str:
    r = _range_of(items)
    if r is None:
        return "<td>–</td>"
    detail = "&#10;".join(f"{_e(i.get('name', ''))}: [{_fmt(i.get('min'), '.4g')}, {_fmt(i.get('max'), '.4g')}]"
                          for i in items)
    more = f' <span class="small">({len(items)})</span>' if len(items) > 1 else ""
    return f'<td title="{detail}">[{r[0]:.4g}, {r[1]:.4g}]{more}</td>'


def _summary_table(v: _View) -> str:
    rows = [("fp32", "FP32"), ("weights_only", "weights only"), ("activations_only", "activations only"),
            ("base", f"all at {v.base}")]
    out = ["<table><tr><th>configuration</th><th>" + _e(v.metric) + "</th><th>drop vs FP32</th>"
           "<th>target</th></tr>"]
    for k, lbl in rows:
        val = v.summary.get(k, math.nan)
        if not _ok(val):
            continue
        d = v.drop(val)
        if k == "fp32" or not (_ok(v.max_drop) and _ok(d)):
            verdict = ""
        else:
            verdict = '<span class="pass">meets</span>' if d <= v.max_drop else '<span class="fail">misses</span>'
        out.append(f'<tr><td style="text-align:left">{_e(lbl)}</td><td>{val:.4f}</td>'
                   f"<td>{_fmt(d, '+.4f') if k != 'fp32' else ''}</td><td>{verdict}</td></tr>")
    out.append("</table>")
    return "\n".join(out)


BAD_ROW = ' class="bad"'


def _groups_table(v: _View) -> str:
    head = ("<tr><th>rank</th><th style='text-align:left'>group (full name)</th><th>MACs</th>"
            "<th>enable-one</th><th>drop</th><th>disable-one</th><th>gain</th><th>SQNR dB</th>"
            "<th>weight range</th><th>activation range</th><th>sentinels</th></tr>")
    out = ["<table>", head]
    for i, g in enumerate(v.groups):
        acts = list(g.get("activations") or [])
        sent = _sentinels(acts)
        macs = _num(g.get("macs"))
        d = v.enable_drop[i]
        bad = _ok(v.max_drop) and _ok(d) and d > v.max_drop
        ops = ", ".join(str(o) for o in g.get("ops") or [])
        out.append(
            f"<tr{BAD_ROW if bad else ''}><td>{v.ranks[i]}</td>"
            f'<td class="name" title="ops: {_e(ops)}">{_e(v.names[i])}</td>'
            f"<td>{f'{int(macs):,}' if _ok(macs) else '–'}</td>"
            f"<td>{_fmt(g.get('enable_one'))}</td><td>{_fmt(d, '+.4f')}</td>"
            f"<td>{_fmt(g.get('disable_one'))}</td><td>{_fmt(v.disable_gain[i], '+.4f')}</td>"
            f"<td>{_fmt(g.get('sqnr_db'), '.1f')}</td>"
            f"{_range_cell(list(g.get('weights') or []))}{_range_cell(acts)}"
            f"<td>{sent if sent else ''}</td></tr>")
    out.append("</table>")
    return "\n".join(out)


def _html(v: _View, pngs: dict[str, Path]) -> str:
    title = f"Sensitivity analysis: {v.experiment} at {v.base}"
    direction = "higher is better" if v.higher else "lower is better"
    target = f"max drop {v.max_drop:g}" if _ok(v.max_drop) else "no target"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">metric <b>{_e(v.metric)}</b> ({direction}) · FP32 {_fmt(v.fp32)} · target {_e(target)}'
        f" · {len(v.groups)} quantizer groups · ranked by <b>{_e(v.ranking)}</b></p>",
        "<h2>Summary</h2>", _summary_table(v),
    ]
    if v.doc.get("interpretation"):
        parts.append(f'<p class="interp">{_e(v.doc["interpretation"])}</p>')
    op = "−" if v.higher else "+"
    for name in PLOTS:
        if name not in pngs:
            continue
        cap = _CAPTIONS[name].format(base=_e(v.base), op=op)
        note = v.more_note() if name in ("sensitivity", "ranges") else ""
        cap += f" <i>({_e(note)}.)</i>" if note else ""
        parts.append(f"<h2>{_e(_HEADINGS[name])}</h2><figure>{_img(pngs[name], name)}"
                     f"<figcaption>{cap}</figcaption></figure>")
    parts += ["<h2>All groups</h2>",
              '<p class="small">Most sensitive first. drop = FP32 − enable-one and gain = disable-one − all '
              f"quantized, both oriented so that positive means the group matters ({direction}). "
              "Rows beyond the target are shaded; hover a range for each tensor, a name for its ops.</p>",
              _groups_table(v), "</body></html>"]
    return "\n".join(parts)


# -- entry point ------------------------------------------------------------------------------
def render_plot(doc: dict[str, Any], name: str) -> bytes | None:
    """One plot of the report as PNG bytes (None when it has nothing to show). Pure function of ``doc``, so
    it can run anywhere, e.g. on idle workers in parallel."""
    import tempfile

    makers = {"summary": _plot_summary, "sensitivity": _plot_sensitivity, "sqnr": _plot_sqnr,
              "ranges": _plot_ranges, "histograms": _plot_histograms}
    with tempfile.TemporaryDirectory() as tmp:
        path = makers[name](_View(doc), Path(tmp) / f"{name}.png")
        return path.read_bytes() if path is not None else None


def write_sensitivity_report(doc: dict[str, Any], out_dir: Path,
                             render: Callable[[list[str]], dict[str, bytes | None]] | None = None) -> dict[str, Path]:
    """Write the plots and ``report.html`` into ``out_dir``; return ``{"html": path, plot name: png path}``.

    Plots with nothing to show (no SQNR, no histograms, no groups) are skipped and absent from the result.
    ``render(names) -> {name: png bytes}`` renders plots elsewhere (e.g. in parallel on the worker pool);
    by default they are rendered here.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    v = _View(doc)
    rendered = render(list(PLOTS)) if render is not None else {n: render_plot(doc, n) for n in PLOTS}
    pngs: dict[str, Path] = {}
    for name in PLOTS:
        data = rendered.get(name)
        if data is not None:
            pngs[name] = out_dir / f"{name}.png"
            pngs[name].write_bytes(data)
    html_path = out_dir / "report.html"
    html_path.write_text(_html(v, pngs), encoding="utf-8")
    return {"html": html_path, **pngs}
