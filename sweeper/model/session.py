"""ONNX Runtime sessions, set up one way everywhere (threads, logging, optimization level), and
:class:`BoundRunner`, which runs a session whose many control inputs change rarely."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx

# Two ways a simulation can be bit-identical to its exported QDQ model (``sweeper.sim.quantsim.sim_mode``
# picks one per model, the export records it in its metadata under REFERENCE_KEY):
#
# * LAYOUT, when every quantized weight is a constant of the simulation (Conv/ConvTranspose/Gemm layers):
#   both run ONNX Runtime's default optimizations, NCHWc layout transformer included, with Q/DQ fusion off
#   (``session.disable_quant_qdq``); the export's weight DequantizeLinear nodes fold into the same float
#   constants the simulation holds, so both run the same blocked-layout kernels. This is what makes a CNN's
#   simulation cost what FP32 costs: without NCHWc, ONNX Runtime's plain depthwise Conv is up to 10x slower.
# * PLAIN, when some weights are run-time inputs of the simulation (MatMul, shared weights) or a Conv's output
#   is read in a way NCHWc would compute differently at a float activation (``quantsim.sim_mode``): the
#   simulation keeps every optimization but NCHWc, the export runs with optimizations off (its weights are
#   DequantizeLinear outputs, so nothing folds), and both with prepacking off: ONNX Runtime's MatMul/Gemm over
#   a constant (prepacked) B add in another order than over a run-time B (measured: 1e-4 at K = 576), and
#   a weight left float is a constant in the export.
#   (NCHWc cannot be kept per op here: measured on the real suite, no depthwise Conv and only some
#   pointwise ones give the same bits with and without it.)
LAYOUT, PLAIN = "layout", "plain"
REFERENCE_KEY = "sweeper.sim_equals_export_under"
_PLAIN_DISABLED = ["NchwcTransformer"]


def ort_session(model: onnx.ModelProto | bytes, threads: int = 1, optimize: bool = True,
                exact: str | None = None, single_pass: bool = False) -> Any:
    """A CPU session of ``model`` with ``threads`` intra-op threads (0: ONNX Runtime's default), one
    inter-op thread and quiet logs; ``optimize=False`` turns graph optimizations off; ``exact`` is the
    simulation's mode (LAYOUT or PLAIN, above): the session options under which its results are the export's,
    bit for bit. ``single_pass``: a session that runs one pass of a few batches with nodes added to read
    intermediate tensors (calibration's reductions). Its nodes run in ONNX Runtime's priority-based order: the
    default order ran the readers last, keeping every tensor alive to the end (a 296-group recognizer's pass
    took 6.5 GB more and 3-10x the time); and the memory pattern is off: it costs a session's first two runs
    (a 224x224 classifier's pass: 0.60 s instead of 0.87 s)."""
    import onnxruntime as ort

    if exact not in (None, LAYOUT, PLAIN):
        raise ValueError(f"exact must be {LAYOUT!r}, {PLAIN!r} or None, not {exact!r}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if exact == LAYOUT:
        so.add_session_config_entry("session.disable_quant_qdq", "1")
    if exact == PLAIN or not optimize:  # see PLAIN above: constant and run-time weights, the same kernels
        so.add_session_config_entry("session.disable_prepacking", "1")
    if single_pass:
        so.execution_order = ort.ExecutionOrder.PRIORITY_BASED
        so.enable_mem_pattern = False
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"],
                                disabled_optimizers=_PLAIN_DISABLED if exact == PLAIN else None)


def reference_mode(model: onnx.ModelProto) -> str:
    """The mode an exported QDQ model was simulated in (its REFERENCE_KEY metadata; PLAIN when absent)."""
    return next((p.value for p in model.metadata_props if p.key == REFERENCE_KEY), PLAIN)


def describe_mode(mode: str) -> str:
    """The session options of ``mode`` in words (what ``sweeper export`` prints)."""
    if mode == LAYOUT:
        return "ONNX Runtime's default optimizations with session.disable_quant_qdq=1"
    return "graph optimizations off (ORT_DISABLE_ALL) with session.disable_prepacking=1"


def reference_session(model: onnx.ModelProto | bytes | str, threads: int = 1) -> Any:
    """A session of an exported QDQ model (a ModelProto, its bytes or its path) under the options with which
    it reproduces the simulation bit for bit: LAYOUT's for a LAYOUT export, optimizations off otherwise."""
    if isinstance(model, bytes):
        model = onnx.load_from_string(model)
    elif not isinstance(model, onnx.ModelProto):  # a path
        model = onnx.load(str(model))
    if reference_mode(model) == LAYOUT:
        return ort_session(model, threads, exact=LAYOUT)
    return ort_session(model, threads, optimize=False)


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
            held = []  # the arrays bound for this run, alive until it ends
            for name, value in feeds.items():
                arr = np.asarray(value)  # not np.ascontiguousarray: it makes a scalar (shape ()) shape (1,)
                if not arr.flags.c_contiguous:
                    arr = np.ascontiguousarray(arr)
                held.append(arr)
                self._io.bind_cpu_input(name, arr)
            self._io.clear_binding_outputs()
            for name in self.outputs:
                self._io.bind_output(name)
            self.session.run_with_iobinding(self._io)
            for name in feeds:  # an overridden control is bound again for the next run
                if name in self._bound:
                    self._io.bind_ortvalue_input(name, self._bound[name][1])
            return self._io.copy_outputs_to_cpu()
