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

    def update_range(self, lo: float, hi: float, size: int) -> None:
        """What :meth:`update` does to a range-only statistic (no histogram, no float16 count) given the
        tensor's minimum ``lo``, maximum ``hi`` (finite, no sentinel) and ``size``, computed elsewhere."""
        assert not self.histogram and not self.count_fp16_flush
        if size == 0:
            return
        self.count += size
        self.min, self.max = min(self.min, lo), max(self.max, hi)

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
    whole: Iterable[str] = (),
) -> CalibrationStats:
    """Run the FP32 model once over ``data`` (a dict of arrays batched along axis 0, a list of feed dicts
    passed as given, or a Dataset) and gather the statistics of ``tensors`` and the shapes of ``extra_shapes``.
    ``max_samples`` counts samples in the batched layout and feeds in the feeds layout. ``histograms=False``
    keeps ranges only (min-max calibration reads nothing else); ``fp16_flush`` names the tensors whose float16
    underflow is counted (None: all); ``whole`` names tensors known to need whole values (an earlier pass found
    masking sentinels in them), so the range-only pass takes them whole at once instead of in a second pass.

    With histograms, every tensor comes out of the session whole. Ranges only are reduced inside the session
    (:func:`_with_range_outputs`): a tensor handed to Python costs a fresh buffer and a copy each run (on a
    224x224 classifier such a pass cost 8x the model's own run), its min and max are two scalars. The tensors
    whose float16 underflow is counted still come out whole, and so does, in a second pass, every tensor whose
    range turned out to hold masking sentinels, inf or NaN (they need the filtering of :meth:`TensorStats.update`);
    a model the reduced pass cannot run is calibrated the whole way."""
    from sweeper.eval.data import as_dataset

    ds = as_dataset(data, "calibration data")
    assert ds is not None
    flush = None if fp16_flush is None else set(fp16_flush)
    wanted = list(dict.fromkeys(list(tensors) + list(extra_shapes)))
    if histograms or flush is None:
        return _collect_whole(model, tensors, wanted, ds, input_names, batch_size, max_samples, threads,
                              histograms, flush)
    inputs = set(input_names)
    known = flush | inputs | set(whole)
    reduced = [t for t in wanted if t not in known]
    try:
        stats, shapes, seen, special = _collect_reduced(model, tensors, reduced, [t for t in wanted if t in known],
                                                        ds, input_names,
                                                        batch_size, max_samples, threads, flush)
    except Exception:  # noqa: BLE001  (an op ONNX Runtime cannot reduce, an empty tensor...): the whole way
        return _collect_whole(model, tensors, wanted, ds, input_names, batch_size, max_samples, threads,
                              False, flush)
    if special:
        again = _collect_whole(model, special, special, ds, input_names, batch_size, max_samples, threads,
                               False, flush)
        stats.update(again.tensors)
    return CalibrationStats(tensors=stats, shapes=shapes, samples=seen)


def _feeds(ds: Any, input_names: list[str], batch_size: int,
           max_samples: int | None) -> Iterable[tuple[int, dict[str, np.ndarray]]]:
    """The model feeds of a calibration pass and the samples seen after each (``max_samples`` cuts them)."""
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
        yield seen, feeds


def _augmented(model: onnx.ModelProto, outputs: list[str], input_names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` with ``outputs`` exposed as graph outputs (graph inputs are fed, not output)."""
    aug = onnx.ModelProto()
    aug.CopyFrom(model)
    existing = {o.name for o in aug.graph.output}
    for t in outputs:
        if t not in existing and t not in input_names:
            aug.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    return aug


def _collect_whole(model: onnx.ModelProto, tensors: list[str], wanted: list[str], ds: Any,
                   input_names: list[str], batch_size: int, max_samples: int | None, threads: int,
                   histograms: bool, flush: set[str] | None) -> CalibrationStats:
    """Every tensor of ``wanted`` out of the session whole, ``tensors``' statistics updated from the arrays."""
    from sweeper.model.session import ort_session

    sess = ort_session(_augmented(model, wanted, input_names), threads)
    out_names = [o.name for o in sess.get_outputs()]
    stats = {t: TensorStats(histogram=histograms, count_fp16_flush=flush is None or t in flush) for t in tensors}
    shapes: dict[str, tuple[int, ...]] = {}
    seen = 0
    for so_far, feeds in _feeds(ds, input_names, batch_size, max_samples):
        values = dict(zip(out_names, sess.run(out_names, feeds), strict=True))
        values.update(feeds)
        _take_whole(values, wanted, stats, shapes)
        seen = so_far
    return CalibrationStats(tensors=stats, shapes=shapes, samples=seen)


def _take_whole(values: dict[str, np.ndarray], wanted: list[str], stats: dict[str, TensorStats],
                shapes: dict[str, tuple[int, ...]]) -> None:
    """One run's whole tensors of ``wanted`` (those in ``values``) into their statistics and shapes."""
    for t in wanted:
        v = values.get(t)
        if v is None:
            continue
        if t in stats:
            stats[t].update(v)
            stats[t].shape = tuple(v.shape)
        shapes[t] = tuple(v.shape)


def _with_range_outputs(model: onnx.ModelProto, reduced: list[str], whole: list[str],
                        input_names: list[str]) -> tuple[onnx.ModelProto, dict[str, tuple[str, str, str, str]]]:
    """A copy of ``model`` whose outputs are, for each tensor of ``reduced``, its minimum, maximum, sum (over
    all axes: reductions without axes, at every opset) and shape, and ``whole`` as they are. The sum is there
    for NaN: ONNX Runtime's ``ReduceMin``/``ReduceMax`` skip a NaN unless it comes first, a sum never does.
    Returns the model and ``{tensor: (min, max, sum, shape output names)}``."""
    aug = _augmented(model, whole, input_names)
    names: dict[str, tuple[str, str, str, str]] = {}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for i, t in enumerate(reduced):
        outs = (f"sweeper_cal_{i}_min", f"sweeper_cal_{i}_max", f"sweeper_cal_{i}_sum", f"sweeper_cal_{i}_shape")
        for op, out in zip(("ReduceMin", "ReduceMax", "ReduceSum", "Shape"), outs, strict=True):
            kw = {"keepdims": 0} if op != "Shape" else {}
            readers.setdefault(t, []).append(onnx.helper.make_node(op, [t], [out], name=out, **kw))
            aug.graph.output.append(onnx.helper.make_empty_tensor_value_info(out))
        names[t] = outs
    # each tensor's readers right after its producer (graph inputs' first): with the priority-based order
    # (see calibration sessions in collect) a tensor is freed as soon as its own consumers are done
    nodes = [n for t in input_names for n in readers.pop(t, [])]
    for node in aug.graph.node:
        nodes.append(node)
        nodes.extend(n for o in node.output for n in readers.pop(o, []))
    nodes.extend(n for rest in readers.values() for n in rest)
    del aug.graph.node[:]
    aug.graph.node.extend(nodes)
    return aug, names


def _collect_reduced(model: onnx.ModelProto, tensors: list[str], reduced: list[str], whole: list[str], ds: Any,
                     input_names: list[str], batch_size: int, max_samples: int | None, threads: int,
                     flush: set[str]) -> tuple[dict[str, TensorStats], dict[str, tuple[int, ...]], int, list[str]]:
    """The range-only pass of :func:`collect`: statistics, shapes, samples seen, and the tensors of
    ``tensors`` whose range met a sentinel, inf or NaN (their statistics must come from whole values)."""
    from sweeper.model.session import ort_session

    aug, names = _with_range_outputs(model, reduced, whole, input_names)
    sess = ort_session(aug, threads, single_pass=True)
    out_names = [o.name for o in sess.get_outputs()]
    stats = {t: TensorStats(histogram=False, count_fp16_flush=t in flush) for t in tensors}
    shapes: dict[str, tuple[int, ...]] = {}
    special: set[str] = set()
    seen = 0
    for so_far, feeds in _feeds(ds, input_names, batch_size, max_samples):
        seen = so_far
        values = dict(zip(out_names, sess.run(out_names, feeds), strict=True))
        values.update(feeds)
        _take_whole(values, whole, stats, shapes)
        for t, (lo_name, hi_name, sum_name, shape_name) in names.items():
            shape = tuple(int(d) for d in values[shape_name])
            shapes[t] = shape
            st = stats.get(t)
            if st is None:
                continue
            st.shape = shape
            lo, hi = float(values[lo_name]), float(values[hi_name])
            if not (-SENTINEL_ABS < lo and hi < SENTINEL_ABS and np.isfinite(values[sum_name])):
                special.add(t)
                continue
            st.update_range(lo, hi, int(np.prod(shape, dtype=np.int64)))
    return stats, shapes, seen, [t for t in tensors if t in special]
