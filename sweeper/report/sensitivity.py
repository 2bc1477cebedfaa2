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
The plots are :mod:`sweeper.report.sensitivity_plots`, the document's view both read
:mod:`sweeper.report.sensitivity_view`; this module writes the page.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sweeper.report.sensitivity_plots import render_plot
from sweeper.report.sensitivity_view import PLOTS, SensitivityView, fmt, num, ok, range_of, sentinels

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
    r = range_of(items)
    if r is None:
        return "<td>–</td>"
    detail = "&#10;".join(f"{_e(i.get('name', ''))}: [{fmt(i.get('min'), '.4g')}, {fmt(i.get('max'), '.4g')}]"
                          for i in items)
    more = f' <span class="small">({len(items)})</span>' if len(items) > 1 else ""
    return f'<td title="{detail}">[{r[0]:.4g}, {r[1]:.4g}]{more}</td>'


def _summary_table(v: SensitivityView) -> str:
    rows = [("fp32", "FP32"), ("weights_only", "weights only"), ("activations_only", "activations only"),
            ("base", f"all at {v.base}")]
    out = ["<table><tr><th>configuration</th><th>" + _e(v.metric) + "</th><th>drop vs FP32</th>"
           "<th>target</th></tr>"]
    for k, lbl in rows:
        val = v.summary.get(k, math.nan)
        if not ok(val):
            continue
        d = v.drop(val)
        if k == "fp32" or not (ok(v.max_drop) and ok(d)):
            verdict = ""
        else:
            verdict = '<span class="pass">meets</span>' if d <= v.max_drop else '<span class="fail">misses</span>'
        out.append(f'<tr><td style="text-align:left">{_e(lbl)}</td><td>{val:.4f}</td>'
                   f"<td>{fmt(d, '+.4f') if k != 'fp32' else ''}</td><td>{verdict}</td></tr>")
    out.append("</table>")
    return "\n".join(out)


BAD_ROW = ' class="bad"'


def _groups_table(v: SensitivityView) -> str:
    head = ("<tr><th>rank</th><th style='text-align:left'>group (full name)</th><th>MACs</th>"
            "<th>enable-one</th><th>drop</th><th>disable-one</th><th>gain</th><th>SQNR dB</th>"
            "<th>weight range</th><th>activation range</th><th>sentinels</th></tr>")
    out = ["<table>", head]
    for i, g in enumerate(v.groups):
        acts = list(g.get("activations") or [])
        sent = sentinels(acts)
        macs = num(g.get("macs"))
        d = v.enable_drop[i]
        bad = ok(v.max_drop) and ok(d) and d > v.max_drop
        ops = ", ".join(str(o) for o in g.get("ops") or [])
        out.append(
            f"<tr{BAD_ROW if bad else ''}><td>{v.ranks[i]}</td>"
            f'<td class="name" title="ops: {_e(ops)}">{_e(v.names[i])}</td>'
            f"<td>{f'{int(macs):,}' if ok(macs) else '–'}</td>"
            f"<td>{fmt(g.get('enable_one'))}</td><td>{fmt(d, '+.4f')}</td>"
            f"<td>{fmt(g.get('disable_one'))}</td><td>{fmt(v.disable_gain[i], '+.4f')}</td>"
            f"<td>{fmt(g.get('sqnr_db'), '.1f')}</td>"
            f"{_range_cell(list(g.get('weights') or []))}{_range_cell(acts)}"
            f"<td>{sent if sent else ''}</td></tr>")
    out.append("</table>")
    return "\n".join(out)


def _html(v: SensitivityView, pngs: dict[str, Path]) -> str:
    title = f"Sensitivity analysis: {v.experiment} at {v.base}"
    direction = "higher is better" if v.higher else "lower is better"
    target = f"max drop {v.max_drop:g}" if ok(v.max_drop) else "no target"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">metric <b>{_e(v.metric)}</b> ({direction}) · FP32 {fmt(v.fp32)} · target {_e(target)}'
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



def write_sensitivity_report(doc: dict[str, Any], out_dir: Path,
                             render: Callable[[list[str]], dict[str, bytes | None]] | None = None) -> dict[str, Path]:
    """Write the plots and ``report.html`` into ``out_dir``; return ``{"html": path, plot name: png path}``.

    Plots with nothing to show (no SQNR, no histograms, no groups) are skipped and absent from the result.
    ``render(names) -> {name: png bytes}`` renders plots elsewhere (e.g. in parallel on the worker pool);
    by default they are rendered here.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    v = SensitivityView(doc)
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
