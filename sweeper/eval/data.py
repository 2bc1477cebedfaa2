"""Calibration and evaluation data: loading (``.npz`` or a loader function) and checking against the model."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from sweeper.errors import SweeperError

LABELS = "labels"

Dim = int | str | None
InputSpecs = Mapping[str, tuple[tuple[Dim, ...] | None, Any]]


def load_data(spec: str, where: str) -> dict[str, np.ndarray]:
    """Arrays of a ``.npz`` file or of a ``pkg.module:function`` loader returning a dict of arrays."""
    if spec.lower().endswith(".npz"):
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

    from sweeper.model.intake import resolve_callable

    loader = resolve_callable(spec, where)
    try:
        made = loader()
    except SweeperError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure is the user's loader
        raise SweeperError(where, f"{spec}() failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(made, Mapping) or not made:
        raise SweeperError(where, f"{spec}() returned {type(made).__name__}: expected a non-empty dict "
                                  "of arrays keyed by model input name (plus optional 'labels')")
    data: dict[str, np.ndarray] = {}
    for key, value in made.items():
        if not isinstance(key, str):
            raise SweeperError(where, f"{spec}() returned a key {key!r}: expected string keys (input names)")
        try:
            arr = np.asarray(value)
        except Exception as exc:  # noqa: BLE001
            raise SweeperError(where, f"{spec}()[{key!r}] is not an array ({type(exc).__name__})") from None
        if arr.dtype == object:
            raise SweeperError(where, f"{spec}()[{key!r}] has dtype object: expected a numeric array")
        data[key] = arr
    return data


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
