"""Calibration and evaluation data: loading (``.npz`` or a loader function) and checking against the model.

Data comes in one of two layouts (:class:`Dataset`):

* **batched**: a dict of arrays with the samples along axis 0 of every input (plus optional ``labels``);
  sweeper runs it in batches of ``batch_size``;
* **feeds**: a list (or any iterable) of feed dicts, each one ``run`` call's inputs passed to the model as
  given: any shapes, a fixed batch of 1, a batch on another axis, scalars, recurrent state (plus optional
  ``labels`` per feed, never sent to the model).

A user metric receives the evaluation data exactly as the loader returned it; sweeper checks only what it
feeds the model itself (:func:`checked_run`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from sweeper.errors import SweeperError

LABELS = "labels"

Dim = int | str | None
InputSpecs = Mapping[str, tuple[tuple[Dim, ...] | None, Any]]


def _read_npz(spec: str, where: str) -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` file (one per model input, plus optional labels)."""
    path = Path(spec)
    if not path.is_file():
        raise SweeperError(where, f"data file not found: {spec}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: np.asarray(npz[key]) for key in npz.files}
    except Exception as exc:  # noqa: BLE001 - any failure is the user's file
        raise SweeperError(where, f"cannot read {spec} as .npz ({type(exc).__name__}: {exc})") from None
    if not arrays:
        raise SweeperError(where, f"{spec} holds no arrays: expected one array per model input")
    return arrays


def load_data(spec: str, where: str) -> dict[str, np.ndarray]:
    """Arrays of a ``.npz`` file or of a ``pkg.module:function`` loader returning a dict of arrays: the
    batched layout only (:func:`load_dataset`, which this is a view of, accepts feed lists too)."""
    raw, ds = load_dataset(spec, where, opaque_ok=True)
    if ds is None or ds.arrays is None:
        raise SweeperError(where, f"{spec}() returned {type(raw).__name__}: expected a non-empty dict "
                                  "of arrays keyed by model input name (plus optional 'labels')")
    for key in ds.arrays:
        if not isinstance(key, str):
            raise SweeperError(where, f"{spec}() returned a key {key!r}: expected string keys (input names)")
    return dict(ds.arrays)


def _show_shape(shape: tuple[Dim, ...]) -> str:
    dims = ["?" if d is None else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def check_data(data: Mapping[str, np.ndarray], inputs: InputSpecs, needs_labels: bool, where: str) -> int:
    """Check ``data`` against the model's inputs ``{name: (shape, dtype)}`` (a dim that is None or a
    string is dynamic; a shape of None means unknown rank); returns the number of samples."""
    keys = ", ".join(sorted(data)) or "none"
    samples: int | None = None
    first = ""
    for name, (shape, dtype) in inputs.items():
        if name not in data:
            raise SweeperError(where, f"input {name!r} missing: the model's inputs are "
                                      f"{', '.join(inputs)}; the data has keys {keys}")
        arr = data[name]
        expected_dtype = np.dtype(dtype)
        if arr.dtype != expected_dtype:
            raise SweeperError(where, f"input {name!r} has dtype {arr.dtype}: the model expects {expected_dtype}")
        if arr.ndim == 0:
            if shape is not None and len(shape) == 0:
                continue  # a scalar input (e.g. a sample rate): fed as it is with every batch
            raise SweeperError(where, f"input {name!r} is a scalar: expected a batch of samples along axis 0")
        if shape is not None:
            mismatch = len(shape) != arr.ndim or any(
                isinstance(d, int) and d != n for d, n in zip(shape, arr.shape, strict=False)
            )
            if mismatch:
                raise SweeperError(where, f"input {name!r} has shape {_show_shape(arr.shape)}: the model "
                                          f"expects {_show_shape(tuple(shape))} ('?' = any size)")
        if samples is None:
            samples, first = arr.shape[0], name
        elif arr.shape[0] != samples:
            raise SweeperError(where, f"input {name!r} has {arr.shape[0]} samples but {first!r} has {samples}: "
                                      "expected the same number of samples in every input")
    if needs_labels:
        if LABELS not in data:
            raise SweeperError(where, "labels missing: metric top1 needs a 'labels' array")
        labels = data[LABELS]
        if labels.ndim == 0 or not np.issubdtype(labels.dtype, np.integer):
            raise SweeperError(where, f"labels have shape {_show_shape(labels.shape)} and dtype {labels.dtype}: "
                                      "expected an integer class index per sample")
        if samples is not None and labels.shape[0] != samples:
            raise SweeperError(where, f"labels have {labels.shape[0]} samples but {first!r} has {samples}: "
                                      "expected one label per sample")
    if samples == 0:
        raise SweeperError(where, "the data has 0 samples: expected at least one")
    return samples or 0


def input_specs_from_onnx(model: onnx.ModelProto) -> dict[str, tuple[tuple[int | None, ...], np.dtype]]:
    """``{name: (shape, dtype)}`` of the graph inputs that are not initializers; dynamic dims are None
    (an input without shape information gets a shape of None: rank unknown)."""
    initializers = {t.name for t in model.graph.initializer}
    specs: dict[str, tuple[Any, np.dtype]] = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        shape: tuple[int | None, ...] | None = None
        if tensor.HasField("shape"):
            shape = tuple(
                d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim
            )
        specs[value.name] = (shape, dtype)
    return specs


# ----------------------------------------------------------------------------------------- datasets
Batch = tuple[Any, dict[str, np.ndarray]]  # (key to index per-batch references with, model feeds)


class Dataset:
    """Model data in the batched or the feeds layout (see the module docstring); ``raw`` is what the
    loader returned, unchanged (a user metric receives it)."""

    def __init__(self, raw: Any, arrays: Mapping[str, np.ndarray] | None = None,
                 feeds: list[dict[str, Any]] | None = None) -> None:
        if (arrays is None) == (feeds is None):
            raise ValueError("a Dataset is either batched (arrays) or a list of feeds")
        self.raw = raw
        self.arrays = None if arrays is None else dict(arrays)
        self.feeds = feeds

    @property
    def layout(self) -> str:
        return "batched" if self.arrays is not None else "feeds"

    @property
    def samples(self) -> int:
        """Samples (batched) or feeds (feeds layout)."""
        if self.arrays is not None:
            first = next((v for k, v in self.arrays.items() if k != LABELS), None)
            return 0 if first is None or np.ndim(first) == 0 else len(first)
        return len(self.feeds or [])

    def batches(self, input_names: list[str], batch_size: int) -> Iterator[Batch]:
        """``(key, feeds)`` per model run: a slice of the samples, or the feed's index; feeds hold the model
        inputs only (never labels)."""
        if self.arrays is not None:
            n = self.samples
            for start in range(0, n, batch_size):
                part = slice(start, min(start + batch_size, n))  # scalar inputs go to every batch as they are
                yield part, {k: self.arrays[k][part] if np.ndim(self.arrays[k]) else self.arrays[k]
                             for k in input_names}
        else:
            for i, feed in enumerate(self.feeds or []):
                yield i, {k: np.asarray(feed[k]) for k in input_names}

    def labels(self, key: Any) -> np.ndarray | None:
        """The labels of one batch (by the key :meth:`batches` gave), or None."""
        if self.arrays is not None:
            return None if LABELS not in self.arrays else np.asarray(self.arrays[LABELS])[key]
        feed = (self.feeds or [])[key]
        return None if LABELS not in feed else np.asarray(feed[LABELS])

    def first(self, input_names: list[str], batch_size: int) -> dict[str, np.ndarray]:
        """The first model run's feeds (warm-up, latency measurement, probes)."""
        return next(iter(self.batches(input_names, batch_size)))[1]

    def head(self, n: int) -> Dataset:
        """At most ``n`` samples (batched) or feeds."""
        if self.arrays is not None:
            arrays = {k: (v[:n] if np.ndim(v) else v) for k, v in self.arrays.items()}
            return Dataset(arrays, arrays=arrays)
        feeds = list((self.feeds or [])[:n])
        return Dataset(feeds, feeds=feeds)


def as_dataset(data: Any, where: str = "data", opaque_ok: bool = False) -> Dataset | None:
    """``data`` as a :class:`Dataset`: a mapping of arrays (batched), a list/tuple/iterable of feed dicts
    (feeds), or an existing Dataset. Anything else is an error, unless ``opaque_ok`` (data only a user
    metric reads), where None is returned."""
    if isinstance(data, Dataset):
        return data
    if isinstance(data, Mapping):
        if all(isinstance(v, (np.ndarray, np.generic, list, tuple, int, float)) for v in data.values()):
            return Dataset(data, arrays={str(k): np.asarray(v) for k, v in data.items()})
    elif isinstance(data, (list, tuple)) or (isinstance(data, Iterable) and not isinstance(data, (str, bytes))):
        feeds = list(data)
        if feeds and all(isinstance(f, Mapping) for f in feeds):
            return Dataset(data if isinstance(data, (list, tuple)) else feeds, feeds=[dict(f) for f in feeds])
    if opaque_ok:
        return None
    raise SweeperError(where, f"got {type(data).__name__}: expected a dict of arrays (samples along axis 0) or "
                              "a list of feed dicts (one model run each)")


def load_dataset(spec: Any, where: str, opaque_ok: bool = False) -> tuple[Any, Dataset | None]:
    """``(raw, dataset)`` from a ``.npz`` path, a ``pkg.module:function`` loader, or (Python API) a mapping,
    an iterable of feed dicts or a callable returning one of those. ``dataset`` is None only for data only a
    user metric reads (``opaque_ok``)."""
    if isinstance(spec, str) and spec.lower().endswith(".npz"):
        arrays = _read_npz(spec, where)
        return arrays, Dataset(arrays, arrays=arrays)
    if isinstance(spec, str):
        from sweeper.model.intake import resolve_callable

        spec_name, loader = spec, resolve_callable(spec, where)
    elif callable(spec) and not isinstance(spec, Mapping):
        spec_name, loader = getattr(spec, "__name__", "loader"), spec
    else:
        spec_name, loader = None, None
    if loader is not None:
        try:
            made = loader()
        except SweeperError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure is the user's loader
            raise SweeperError(where, f"{spec_name}() failed: {type(exc).__name__}: {exc}") from None
    else:
        made = spec
    if isinstance(made, Mapping) and not made:
        raise SweeperError(where, f"{spec_name or 'the data'} is empty: expected arrays keyed by model input name")
    ds = as_dataset(made, where, opaque_ok)
    if ds is not None and ds.arrays is not None:
        for key, value in ds.arrays.items():
            if value.dtype == object:
                raise SweeperError(where, f"[{key!r}] has dtype object: expected a numeric array")
    return (ds.raw if ds is not None else made), ds


def _check_feed(feed: Mapping[str, Any], inputs: InputSpecs, where: str) -> None:
    """One run's feeds against the model's inputs: names, dtypes, ranks and fixed dims (no batch axis)."""
    keys = ", ".join(sorted(map(str, feed))) or "none"
    for name, (shape, dtype) in inputs.items():
        if name not in feed:
            raise SweeperError(where, f"input {name!r} missing: the model's inputs are {', '.join(inputs)}; "
                                      f"the feed has keys {keys}")
        arr = np.asarray(feed[name])
        if arr.dtype != np.dtype(dtype):
            raise SweeperError(where, f"input {name!r} has dtype {arr.dtype}: the model expects {np.dtype(dtype)}")
        if shape is not None and (len(shape) != arr.ndim or any(
                isinstance(d, int) and d != n for d, n in zip(shape, arr.shape, strict=False))):
            raise SweeperError(where, f"input {name!r} has shape {_show_shape(arr.shape)}: the model "
                                      f"expects {_show_shape(tuple(shape))} ('?' = any size)")


def check_dataset(ds: Dataset, inputs: InputSpecs, needs_labels: bool, where: str) -> int:
    """Check a dataset against the model's inputs (every feed, in the feeds layout); returns its samples
    (batched) or feeds."""
    if ds.arrays is not None:
        return check_data(ds.arrays, inputs, needs_labels, where)
    feeds = ds.feeds or []
    if not feeds:
        raise SweeperError(where, "the data has 0 feeds: expected at least one")
    for i, feed in enumerate(feeds):
        _check_feed(feed, inputs, f"{where}[{i}]")
        if needs_labels:
            lab = feed.get(LABELS)
            if lab is None or not np.issubdtype(np.asarray(lab).dtype, np.integer):
                raise SweeperError(f"{where}[{i}]", "labels missing or not integers: metric top1 needs an "
                                                    "integer 'labels' entry in every feed")
    return len(feeds)


def checked_run(run: Callable[[dict[str, np.ndarray]], list[np.ndarray]], inputs: InputSpecs, where: str
                ) -> Callable[[dict[str, np.ndarray]], list[np.ndarray]]:
    """``run`` that checks every feed it is given against the model's inputs first (one clear line instead
    of an ONNX Runtime error from inside a user metric)."""
    def run_checked(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if not isinstance(feeds, Mapping):
            raise SweeperError(where, f"run() was given {type(feeds).__name__}: expected a dict of model inputs")
        _check_feed(feeds, inputs, where)
        return run({k: np.asarray(feeds[k]) for k in inputs})
    return run_checked
