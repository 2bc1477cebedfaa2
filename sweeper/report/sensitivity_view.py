"""The sensitivity document (``sensitivity.json``) as the plots and the HTML page read it: per-group drops
oriented so that positive means worse, ranks, short axis labels for long ONNX names, tolerant number parsing."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

MAX_BARS = 40  # groups shown in the per-group plots (the most sensitive ones)
LABEL_CHARS = 40  # axis labels are shortened to about this many characters

PLOTS = ("summary", "sensitivity", "sqnr", "ranges", "histograms")


# -- names ------------------------------------------------------------------------------------
def middle_truncate(s: str, width: int) -> str:
    """``s`` cut in the middle to ``width`` characters (the end of an ONNX name tells more than its start)."""
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
        out.append(middle_truncate(label, max_chars))
    return out


# -- numbers ----------------------------------------------------------------------------------
def num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def ok(v: float) -> bool:
    return v is not None and math.isfinite(v)


def fmt(v: Any, spec: str = ".4f") -> str:
    f = num(v)
    return format(f, spec) if math.isfinite(f) else "–"


def range_of(items: list[dict[str, Any]]) -> tuple[float, float] | None:
    lo = [num(i.get("min")) for i in items]
    hi = [num(i.get("max")) for i in items]
    lo, hi = [v for v in lo if ok(v)], [v for v in hi if ok(v)]
    if not lo or not hi:
        return None
    return min(lo), max(hi)


def sentinels(acts: list[dict[str, Any]]) -> int:
    return sum(int(n) for a in acts if ok(n := num(a.get("sentinels"))))


# -- document view ----------------------------------------------------------------------------
class SensitivityView:
    """The document with derived per-group quantities (drops in 'positive = worse' orientation)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.higher = bool(doc.get("higher_is_better", True))
        self.sign = 1.0 if self.higher else -1.0
        self.summary = {k: num(v) for k, v in (doc.get("summary") or {}).items()}
        self.fp32 = num(doc.get("fp32_metric", self.summary.get("fp32")))
        if not ok(self.fp32):
            self.fp32 = self.summary.get("fp32", math.nan)
        self.base_metric = self.summary.get("base", math.nan)
        self.max_drop = num((doc.get("target") or {}).get("max_drop"))
        self.metric = str(doc.get("metric", "metric"))
        self.base = str(doc.get("base", "base"))
        self.ranking = str(doc.get("ranking", "enable_one"))
        self.experiment = str(doc.get("experiment", ""))
        order = sorted(enumerate(doc.get("groups") or []), key=lambda ig: (num(ig[1].get("rank", ig[0] + 1)), ig[0]))
        self.groups: list[dict[str, Any]] = [g for _, g in order]
        self.ranks = [int(num(g.get("rank"))) if ok(num(g.get("rank"))) else i + 1
                      for i, g in enumerate(self.groups)]
        self.names = [str(g.get("name", f"group {i + 1}")) for i, g in enumerate(self.groups)]
        self.labels = shorten_names(self.names)
        self.enable_drop = [self.drop(num(g.get("enable_one"))) for g in self.groups]
        self.disable_gain = [self.sign * (num(g.get("disable_one")) - self.base_metric) for g in self.groups]

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
