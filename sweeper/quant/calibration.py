"""Calibration statistics: one pass over the calibration data, per-tensor min/max and histograms.

Statistics do not depend on the precision, so one pass serves every candidate. Masking sentinels (values
such as -3.4e38 that transformer exports add to attention scores) are counted apart: the range covers the
real values only. A tensor that holds them stays float (``sweeper.sim.encodings.EncodingTable.always_float``):
on a grid a sentinel could only saturate to the lowest grid value, and a softmax gives that value weight
(exp(lowest - highest) is 0.55 on scores that span 0.6: a small GPT-2's attention leaked that much to the
future positions, at 8 and 16 bits alike).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from sweeper.quant.fp16 import flushed_to_zero

SENTINEL_ABS = 1e30  # |x| at or above this is a masking sentinel (finfo(float32).min is -3.4e38)
BINS = 2048


def uniform_histogram(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``np.histogram(x, edges)`` for evenly spaced float64 ``edges`` (a ``linspace``), the same counts through
    numpy's equal-width path (index arithmetic, no sort): given the edges as an array, numpy sorts every
    tensor, which was 80 % of calibration on a 311-tensor recognizer."""
    lo, hi = np.float64(edges[0]), np.float64(edges[-1])  # float64 scalars: numpy rebuilds these very edges
    return np.histogram(x, bins=len(edges) - 1, range=(lo, hi))[0].astype(np.int64)


@dataclass
class TensorStats:
    """Running statistics of one tensor."""

    min: float = np.inf
    max: float = -np.inf
    hist: np.ndarray | None = None
    edges: np.ndarray | None = None
    count: int = 0
    sentinels: int = 0
    sentinel_value: float = 0.0
    fp16_flushed: int = 0  # non-zero values that float16 turns into zero (sweeper.quant.fp16)
    histogram: bool = True  # keep a histogram (the mse and percentile schemes and their plots read it)
    count_fp16_flush: bool = True  # count fp16_flushed (only read where a zero breaks a reader)
    shape: tuple[int, ...] = field(default_factory=tuple)

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float32).ravel()
        if x.size == 0:
            return
        lo, hi = float(x.min()), float(x.max())
        if not (-SENTINEL_ABS < lo and hi < SENTINEL_ABS):  # sentinels, inf or NaN (NaN fails both): filter
            mask = np.abs(x) >= SENTINEL_ABS
            n_sent = int(mask.sum())
            if n_sent:
                self.sentinels += n_sent
                self.sentinel_value = float(x[mask][np.argmax(np.abs(x[mask]))])
                x = x[~mask]
            x = x[np.isfinite(x)]
            if x.size == 0:
                return
            lo, hi = float(x.min()), float(x.max())
        if self.count_fp16_flush:
            self.fp16_flushed += flushed_to_zero(x)
        self.count += x.size
        if not self.histogram:
            self.min, self.max = min(self.min, lo), max(self.max, hi)
            return
        if self.hist is None or self.edges is None:
            self.min, self.max = lo, hi
            self.edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, BINS + 1)
            self.hist = uniform_histogram(x, self.edges)
            return
        if lo < self.edges[0] or hi > self.edges[-1]:
            self._widen(min(lo, float(self.edges[0])), max(hi, float(self.edges[-1])))
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        self.hist += uniform_histogram(x, self.edges)

    def _widen(self, lo: float, hi: float) -> None:
        """Re-bin the histogram over a wider range (old bins spread by their centres)."""
        assert self.hist is not None and self.edges is not None
        centres = 0.5 * (self.edges[:-1] + self.edges[1:])
        new_edges = np.linspace(lo, hi, BINS + 1)
        self.hist = np.histogram(centres, new_edges, weights=self.hist)[0].astype(np.int64)
        self.edges = new_edges

    @property
    def sentinel_fraction(self) -> float:
        total = self.count + self.sentinels
        return self.sentinels / total if total else 0.0

    @property
    def degenerate(self) -> bool:
        """No real range at all (e.g. an additive attention mask: real values are all zero)."""
        return self.count == 0 or self.max - self.min <= 0.0


@dataclass
class CalibrationStats:
    """Statistics of every activation quantizer plus the observed shapes of the tensors asked for."""

    tensors: dict[str, TensorStats]
    shapes: dict[str, tuple[int, ...]]
    samples: int
    # activation statistics with the weights fake-quantized at N bits (AIMET calibrates this way):
    # {N: {tensor: TensorStats}}, filled by sweeper.quant.weight_aware; empty = FP32 statistics only
    by_weight_bits: dict[int, dict[str, TensorStats]] = field(default_factory=dict)

    def sentinel_report(self) -> dict[str, dict[str, float | str]]:
        """Tensors where masking sentinels were found, and how they are handled."""
        out: dict[str, dict[str, float | str]] = {}
        for name, st in self.tensors.items():
            if st.sentinels:
                out[name] = {
                    "sentinel_value": st.sentinel_value,
                    "sentinel_fraction": round(st.sentinel_fraction, 4),
                    "real_min": st.min if st.count else 0.0,
                    "real_max": st.max if st.count else 0.0,
                    "handling": "kept float (mask only, no real range)" if st.degenerate
                    else "kept float: a grid's lowest value is no mask (softmax would leak weight to masked "
                         "positions); the real range is recorded",
                }
        return out


def batches(data: Mapping[str, np.ndarray], names: list[str], batch_size: int) -> Iterable[dict[str, np.ndarray]]:
    """Model feeds of batched data (samples along axis 0), ``batch_size`` samples at a time."""
    from sweeper.eval.data import Dataset

    for _, feeds in Dataset(data, arrays=data).batches(names, batch_size):
        yield feeds


def collect(
    model: onnx.ModelProto,
    tensors: list[str],
    extra_shapes: list[str],
    data: Any,
    input_names: list[str],
    batch_size: int = 64,
    max_samples: int | None = None,
    threads: int = 0,
    histograms: bool = True,
    fp16_flush: Iterable[str] | None = None,
) -> CalibrationStats:
    """Run the FP32 model once over ``data`` (a dict of arrays batched along axis 0, a list of feed dicts
    passed as given, or a Dataset) with every tensor of interest exposed as an output. ``max_samples``
    counts samples in the batched layout and feeds in the feeds layout. ``histograms=False`` keeps ranges
    only (min-max calibration reads nothing else; the histograms were most of a pass's time);
    ``fp16_flush`` names the tensors whose float16 underflow is counted (None: all)."""
    from sweeper.eval.data import as_dataset
    from sweeper.model.session import ort_session

    ds = as_dataset(data, "calibration data")
    assert ds is not None
    aug = onnx.ModelProto()
    aug.CopyFrom(model)
    existing = {o.name for o in aug.graph.output}
    wanted = list(dict.fromkeys(list(tensors) + list(extra_shapes)))
    for t in wanted:
        if t not in existing and t not in input_names:
            aug.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    sess = ort_session(aug, threads)
    out_names = [o.name for o in sess.get_outputs()]
    flush = None if fp16_flush is None else set(fp16_flush)
    stats = {t: TensorStats(histogram=histograms, count_fp16_flush=flush is None or t in flush) for t in tensors}
    shapes: dict[str, tuple[int, ...]] = {}
    seen = 0
    for _, feeds in ds.batches(input_names, batch_size):
        if max_samples is not None and seen >= max_samples:
            break
        if ds.arrays is not None:
            if max_samples is not None:
                feeds = {k: v[: max_samples - seen] if np.ndim(v) else v for k, v in feeds.items()}
            seen += len(next((v for v in feeds.values() if np.ndim(v)), [0]))
        else:
            seen += 1
        values = dict(zip(out_names, sess.run(out_names, feeds), strict=True))
        values.update(feeds)
        for t in wanted:
            v = values.get(t)
            if v is None:
                continue
            if t in stats:
                stats[t].update(v)
                stats[t].shape = tuple(v.shape)
            shapes[t] = tuple(v.shape)
    return CalibrationStats(tensors=stats, shapes=shapes, samples=seen)
