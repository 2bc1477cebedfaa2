"""ONNX Runtime sessions, set up one way everywhere (threads, logging, optimization level)."""

from __future__ import annotations

from typing import Any

import onnx

# ONNX Runtime's NCHWc layout transformer swaps Conv for blocked-layout kernels that accumulate in another
# order: a few 1e-6 that flip a thresholded metric (measured: a real layout detector's w8a8 F1 0.8358 in the
# simulation vs 0.8235 for its export). Without it the simulation is bit-identical to the exported QDQ model
# run with optimizations off, at every precision.
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
