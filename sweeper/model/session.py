"""ONNX Runtime sessions, set up one way everywhere (threads, logging, optimization level), and
:class:`BoundRunner`, which runs a session whose many control inputs change rarely."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx

# ONNX Runtime's NCHWc layout transformer swaps Conv for blocked-layout kernels that accumulate in another
# order: a few 1e-6 that flip a thresholded metric (measured: a real layout detector's w8a8 F1 0.8358 in the
# simulation vs 0.8235 for its export). Without it the simulation is bit-identical to the exported QDQ model
# run with optimizations off, at every precision. (Checked per layer on the real suite: no depthwise Conv and
# only some pointwise ones give the same bits under NCHWc, so it cannot be kept per op either.)
EXACT_DISABLED = ["NchwcTransformer"]


def ort_session(model: onnx.ModelProto | bytes, threads: int = 1, optimize: bool = True, exact: bool = False) -> Any:
    """A CPU session of ``model`` with ``threads`` intra-op threads (0: ONNX Runtime's default), one
    inter-op thread and quiet logs; ``optimize=False`` turns graph optimizations off (how the exported QDQ
    model is checked against the simulation); ``exact`` keeps every optimization that does not change float
    results (the simulation's sessions: sim = export, bit for bit)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"],
                                disabled_optimizers=EXACT_DISABLED if exact else None)


class BoundRunner:
    """Runs ``session`` with *control* inputs bound once (:meth:`bind`) and data inputs given per run.

    ``session.run(None, feeds)`` converts and checks every input on every call: with the simulation's
    1,000-2,000 scalar control inputs that is milliseconds per batch, more than a small model's whole FP32
    run. Here each control array becomes an OrtValue over its own memory once, is re-bound only when a
    different array object is bound under its name (callers keep their arrays cached and unchanged), and a
    run binds only the data. OrtValues are kept per array (switching back costs only the binding; pruned to
    the bound ones when callers bind many fresh arrays). Results are fresh arrays, as ``session.run`` returns.
    One run at a time: a lock serializes callers.
    """

    def __init__(self, session: Any, outputs: list[str] | None = None) -> None:
        self.session = session
        self.outputs = outputs if outputs is not None else [o.name for o in session.get_outputs()]
        self._io = session.io_binding()
        self._bound: dict[str, tuple[np.ndarray, Any]] = {}  # name -> (array, OrtValue over it)
        self._values: dict[int, tuple[np.ndarray, Any]] = {}  # id(array) -> (array, OrtValue), made once
        self._data: set[str] = set()  # the data inputs the last run bound
        self._lock = threading.Lock()

    def bind(self, controls: Mapping[str, np.ndarray]) -> None:
        """Bind the control inputs ``controls`` (only names whose array object changed are re-bound)."""
        from onnxruntime import OrtValue

        with self._lock:
            for name, arr in controls.items():
                have = self._bound.get(name)
                if have is not None and have[0] is arr:
                    continue
                made = self._values.get(id(arr))
                if made is None:  # an OrtValue over arr's memory; arr is kept alive with it
                    made = self._values[id(arr)] = (arr, OrtValue.ortvalue_from_numpy(arr))
                self._io.bind_ortvalue_input(name, made[1])
                self._bound[name] = made
            if len(self._values) > 4 * len(self._bound) + 4096:  # keep what is bound, drop the rest
                self._values = {id(a): (a, v) for a, v in self._bound.values()}

    def run(self, feeds: Mapping[str, Any]) -> list[np.ndarray]:
        """The session's outputs for the bound controls plus ``feeds`` (a feed overrides a control of the
        same name for this run only)."""
        with self._lock:
            if feeds.keys() != self._data:  # no input of an earlier run stays bound: clear, bind controls again
                self._io.clear_binding_inputs()
                for name, (_, value) in self._bound.items():
                    self._io.bind_ortvalue_input(name, value)
                self._data = set(feeds)
            for name, value in feeds.items():
                self._io.bind_cpu_input(name, np.ascontiguousarray(value))
            self._io.clear_binding_outputs()
            for name in self.outputs:
                self._io.bind_output(name)
            self.session.run_with_iobinding(self._io)
            for name in feeds:  # an overridden control is bound again for the next run
                if name in self._bound:
                    self._io.bind_ortvalue_input(name, self._bound[name][1])
            return self._io.copy_outputs_to_cpu()
