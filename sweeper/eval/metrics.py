"""Metrics: built-in ``top1``, ``cosine`` and ``sqnr`` (all higher-is-better), or a user ``pkg.module:fn``.

``run(feeds) -> list[np.ndarray]`` runs a model (the FP32 original or a QuantSim). Built-ins run it in
batches of ``batch_size`` samples, slicing only the model inputs out of ``data``; ``cosine`` and ``sqnr``
compare output 0 with the FP32 reference computed once by :func:`reference_outputs`.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from sweeper.errors import SweeperError
from sweeper.eval.data import LABELS, Dataset, InputSpecs, as_dataset, checked_run
from sweeper.eval.early import Outcome, mean_bound, sqnr_db
from sweeper.eval.target import Target

BUILTIN_METRICS = ("top1", "cosine", "sqnr")
log = logging.getLogger(__name__)
SQNR_CAP_DB = 100.0

RunFn = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def reference_outputs(run: RunFn, data: Any, input_names: Sequence[str] | None = None,
                      batch_size: int = 256, outputs: Sequence[int] | None = None) -> list[Any]:
    """Outputs of ``run`` over ``data``, per output: batched data gives one array concatenated along axis 0,
    feeds give a list with one array per feed (either is indexed by the batch keys of
    :meth:`~sweeper.eval.data.Dataset.batches`). ``outputs``: keep only these output indices (the FP32
    reference keeps only what the metric compares). ``input_names`` defaults to every key but ``labels``."""
    ds = as_dataset(data)
    assert ds is not None
    if input_names is not None:
        names = list(input_names)
    else:
        first = ds.arrays if ds.arrays is not None else (ds.feeds or [{}])[0]
        names = [k for k in first if k != LABELS]
    parts: list[list[np.ndarray]] = []
    for _, feeds in ds.batches(names, batch_size):
        outs = [np.asarray(o) for o in run(feeds)]
        if outputs is not None:
            outs = [outs[i] for i in outputs]
        if not parts:
            parts = [[] for _ in outs]
        for acc, out in zip(parts, outs, strict=True):
            acc.append(out)
    if ds.arrays is None:
        return parts
    return [np.concatenate(p, axis=0) for p in parts]


class Evaluator:
    """One metric over a model run. ``fn`` is the resolved user function (None for built-ins)."""

    def __init__(self, metric: str, higher_is_better: bool, batch_size: int, input_names: Sequence[str],
                 fn: Callable[..., Any] | None = None, output_index: int = 0, specs: InputSpecs | None = None) -> None:
        if metric not in BUILTIN_METRICS and fn is None:
            raise ValueError(f"{metric!r} is not a built-in metric and no function was given")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.metric = metric
        self.fn = fn
        # built-ins are higher-is-better by construction (the experiment file rejects the contrary)
        self.higher_is_better = True if metric in BUILTIN_METRICS else bool(higher_is_better)
        self.batch_size = batch_size
        self.input_names = list(input_names)
        self.output_index = output_index
        self.specs = specs

    @property
    def is_builtin(self) -> bool:
        return self.fn is None

    @property
    def needs_labels(self) -> bool:
        return self.metric == "top1"

    @property
    def needs_reference(self) -> bool:
        return self.metric in ("cosine", "sqnr")

    def reference_outputs(self, run: RunFn, data: Any) -> list[Any]:
        """The FP32 reference the metric compares with: only the metric's output is kept."""
        return reference_outputs(run, data, self.input_names, self.batch_size, outputs=[self.output_index])

    def evaluate(self, run: RunFn, data: Any, reference: list[Any] | None = None) -> float:
        """The metric of ``run`` on ``data`` (a dict of arrays, a list of feeds, a Dataset; for a user metric
        anything: it is handed over as given)."""
        return self.outcome(run, data, reference).metric

    def outcome(self, run: RunFn, data: Any, reference: list[Any] | None = None, target: Target | None = None
                ) -> Outcome:
        """:meth:`evaluate` with the samples it used; with a ``target``, the evaluation stops as soon as the
        profile cannot meet it (:mod:`sweeper.eval.early`: built-in metrics and user metrics declaring
        per-sample scores; other user metrics always run to the end). Not stopped, the metric is exactly
        :meth:`evaluate`'s."""
        if self.fn is not None:
            raw = data.raw if isinstance(data, Dataset) else data
            if self.score_range is not None:
                return self._user_scores(run, raw, target)
            return Outcome(self._user(run, raw))
        if self.needs_reference and reference is None:
            raise ValueError(f"metric {self.metric} needs the FP32 reference outputs (see reference_outputs)")
        ds = as_dataset(data, self._where())
        assert ds is not None
        if self.metric == "top1":
            return self._top1(run, ds, target)
        assert reference is not None
        if self.metric == "cosine":
            return self._cosine(run, ds, reference[0], target)
        return self._sqnr(run, ds, reference[0], target)

    @property
    def score_range(self) -> tuple[float, float] | None:
        """A user metric's per-sample score range (:func:`~sweeper.eval.early.per_sample_metric`), else None."""
        got = getattr(self.fn, "sweeper_score_range", None)
        return None if got is None else (float(got[0]), float(got[1]))

    @staticmethod
    def _stop(target: Target | None, done: int, total: int, bound: Callable[..., float], *args: Any) -> float | None:
        """The bound ``bound(*args)`` (:mod:`sweeper.eval.early`) when the evaluation stops here: a target,
        samples left, and the best final metric they could give misses it; else None."""
        if target is None or done >= total:
            return None
        best = bound(*args)
        return None if target.meets(best) else best

    # --- built-ins -------------------------------------------------------------------------------

    def _where(self) -> str:
        return f"metric {self.metric}"

    def _output(self, run: RunFn, feeds: dict[str, np.ndarray]) -> np.ndarray:
        outs = run(feeds)
        if len(outs) <= self.output_index:
            raise SweeperError(self._where(), f"the model returned {len(outs)} outputs: expected at least "
                                              f"{self.output_index + 1}")
        return np.asarray(outs[self.output_index])

    def _top1(self, run: RunFn, ds: Dataset, target: Target | None = None) -> Outcome:
        correct = total = rows = 0
        labels = self._label_count(ds) if target is not None else 0
        for key, feeds in ds.batches(self.input_names, self.batch_size):
            pred = np.argmax(self._output(run, feeds), axis=-1)
            lab = ds.labels(key)
            if lab is None:
                raise SweeperError(self._where(), "labels missing: metric top1 needs 'labels'")
            lab = np.asarray(lab)
            if pred.shape != lab.shape:
                if pred.size != lab.size:
                    raise SweeperError(self._where(), f"predictions have shape {pred.shape} but labels "
                                                      f"{lab.shape}: expected one label per prediction")
                pred = pred.reshape(lab.shape)
            correct += int(np.count_nonzero(pred == lab))
            total += lab.size
            rows += _rows(ds, key)
            stop = self._stop(target, rows, ds.samples, mean_bound, correct, total, labels, 1.0)
            if stop is not None:
                return Outcome(correct / total if total else 0.0, rows, ds.samples, True, stop)
        return Outcome(correct / total if total else 0.0, rows, ds.samples)

    @staticmethod
    def _label_count(ds: Dataset) -> int:
        """Labels in the whole data (top1 counts one per label)."""
        if ds.arrays is not None:
            return int(np.size(ds.arrays[LABELS])) if LABELS in ds.arrays else 0
        return sum(int(np.size(f[LABELS])) for f in (ds.feeds or []) if LABELS in f)

    def _paired(self, run: RunFn, ds: Dataset, ref: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(output, reference) per batch, both float64; rows are samples (axis 0) in the batched layout,
        and one row per feed in the feeds layout."""
        for key, feeds in ds.batches(self.input_names, self.batch_size):
            out = self._output(run, feeds)
            r = np.asarray(ref[key])
            if out.shape != r.shape:
                raise SweeperError(self._where(), f"output {self.output_index} has shape {out.shape} but the "
                                                  f"FP32 reference {r.shape}: expected the same shape")
            n = out.shape[0] if ds.arrays is not None and out.ndim else 1
            yield out.reshape(n, -1).astype(np.float64), r.reshape(n, -1).astype(np.float64)

    def _cosine(self, run: RunFn, ds: Dataset, ref: Any, target: Target | None = None) -> Outcome:
        """Mean cosine similarity to the FP32 outputs; a sample whose output has NaN/inf counts as -1 (the
        worst value) and is reported in the log, so the metric itself is never NaN."""
        total, count, bad = 0.0, 0, 0
        outcome: Outcome | None = None
        for out, r in self._paired(run, ds, ref):
            finite = np.isfinite(out).all(axis=1)
            bad += int(np.count_nonzero(~finite))
            out = np.where(finite[:, None], out, 0.0)
            dot = np.sum(out * r, axis=1)
            norms = np.linalg.norm(out, axis=1) * np.linalg.norm(r, axis=1)
            both_zero = (np.linalg.norm(out, axis=1) == 0) & (np.linalg.norm(r, axis=1) == 0)
            with np.errstate(divide="ignore", invalid="ignore"):
                cos = np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), 0.0)
            cos = np.where(both_zero, 1.0, cos)
            cos = np.where(finite, cos, -1.0)
            total += float(np.sum(np.clip(cos, -1.0, 1.0)))
            count += out.shape[0]
            stop = self._stop(target, count, ds.samples, mean_bound, total, count, ds.samples, 1.0)
            if stop is not None:
                outcome = Outcome(total / count, count, ds.samples, True, stop)
                break
        if bad:
            log.warning("metric cosine: %d of %d outputs have NaN/inf values; each counts as cosine -1", bad, count)
        return outcome or Outcome(total / count if count else 0.0, count, ds.samples)

    def _sqnr(self, run: RunFn, ds: Dataset, ref: Any, target: Target | None = None) -> Outcome:
        signal = noise = 0.0
        count = 0
        # the whole reference's signal, summed as the loop sums it: the bound's numerator before any run
        whole = sum(float(np.sum(np.square(np.asarray(ref[k]).astype(np.float64))))
                    for k, _ in ds.batches([], self.batch_size)) if target is not None else 0.0
        for out, r in self._paired(run, ds, ref):
            signal += float(np.sum(r * r))
            noise += float(np.sum((r - out) ** 2))
            count += out.shape[0]
            stop = self._stop(target, count, ds.samples, sqnr_db, whole, noise, SQNR_CAP_DB)
            if stop is not None:
                return Outcome(sqnr_db(signal, noise, SQNR_CAP_DB), count, ds.samples, True, stop)
        return Outcome(sqnr_db(signal, noise, SQNR_CAP_DB), count, ds.samples)

    # --- user metric -----------------------------------------------------------------------------

    def _user(self, run: RunFn, data: Any) -> float:
        """``fn(run, data)`` with the data as the loader returned it; ``run`` checks what it is fed."""
        assert self.fn is not None
        where = f"metric {self.metric}"
        if self.specs is not None:
            run = checked_run(run, self.specs, f"{where}: run()")
        try:
            value = self.fn(run, data)
        except SweeperError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure is the user's function
            raise SweeperError(where, f"{self.metric}(run, data) failed: {type(exc).__name__}: {exc}") from None
        if isinstance(value, np.ndarray) and value.ndim == 0:
            value = value.item()
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) \
                or not math.isfinite(float(value)):
            raise SweeperError(where, f"{self.metric}(run, data) returned {value!r}: expected a finite number")
        return float(value)

    def _user_scores(self, run: RunFn, data: Any, target: Target | None) -> Outcome:
        """A user metric declaring per-sample scores in [lo, hi]: called on consecutive slices of its data of
        ``batch_size`` samples; the metric is the mean of all scores (stopping once the bound misses)."""
        assert self.fn is not None and self.score_range is not None
        lo, hi = self.score_range
        where = f"metric {self.metric}"
        best = hi if self.higher_is_better else lo
        n = _user_rows(data, where)
        if self.specs is not None:
            run = checked_run(run, self.specs, f"{where}: run()")
        total, count = 0.0, 0
        for start in range(0, n, self.batch_size):
            part = _user_slice(data, slice(start, min(start + self.batch_size, n)))
            try:
                scores = np.asarray(self.fn(run, part), dtype=np.float64).reshape(-1)
            except SweeperError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure is the user's function
                raise SweeperError(where, f"{self.metric}(run, data) failed: {type(exc).__name__}: {exc}") from None
            rows = min(start + self.batch_size, n) - start
            if scores.shape != (rows,) or not np.isfinite(scores).all() or scores.min() < lo or scores.max() > hi:
                raise SweeperError(where, f"{self.metric}(run, data[{start}:{start + rows}]) returned scores of "
                                          f"shape {scores.shape}: expected {rows} finite scores in [{lo}, {hi}] "
                                          "(one per sample: it is declared per_sample_metric)")
            total += float(np.sum(scores))
            count += rows
            stop = self._stop(target, count, n, mean_bound, total, count, n, best)
            if stop is not None:
                return Outcome(total / count, count, n, True, stop)
        return Outcome(total / count if count else 0.0, count, n)


def _rows(ds: Dataset, key: Any) -> int:
    """Samples in one batch of :meth:`Dataset.batches` (a slice of the samples, or one feed)."""
    return len(range(ds.samples)[key]) if ds.arrays is not None else 1


def _user_rows(data: Any, where: str) -> int:
    """Samples of a per-sample user metric's data: a dict of arrays (axis 0) or a list."""
    if isinstance(data, dict):
        lengths = {len(v) for v in data.values() if np.ndim(v)}
        if len(lengths) == 1:
            return lengths.pop()
    elif isinstance(data, list | tuple):
        return len(data)
    raise SweeperError(where, "a per_sample_metric needs its data as a dict of arrays with the same first "
                              f"dimension, or a list: got {type(data).__name__}")


def _user_slice(data: Any, part: slice) -> Any:
    if isinstance(data, dict):
        return {k: v[part] if np.ndim(v) else v for k, v in data.items()}
    return data[part]


def make_evaluator(metric: str | Callable[..., Any], higher_is_better: bool, batch_size: int,
                   input_names: Sequence[str], output_index: int = 0, specs: InputSpecs | None = None) -> Evaluator:
    """A built-in metric by name, a user ``pkg.module:fn`` (imported here) or (Python API) a callable,
    called as ``fn(run, data)``."""
    if isinstance(metric, str) and metric in BUILTIN_METRICS:
        return Evaluator(metric, higher_is_better, batch_size, input_names, output_index=output_index, specs=specs)
    if callable(metric):
        name = f"{getattr(metric, '__module__', '')}:{getattr(metric, '__qualname__', 'metric')}"
        return Evaluator(name, higher_is_better, batch_size, input_names, metric, output_index, specs)
    from sweeper.model.intake import resolve_callable

    fn = resolve_callable(metric, "metric")
    return Evaluator(metric, higher_is_better, batch_size, input_names, fn, output_index, specs)
