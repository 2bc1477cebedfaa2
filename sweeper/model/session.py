"""ONNX Runtime sessions, set up one way everywhere (threads, logging, optimization level)."""

from __future__ import annotations

from typing import Any

import onnx


def ort_session(model: onnx.ModelProto | bytes, threads: int = 1, optimize: bool = True) -> Any:
    """A CPU session of ``model`` with ``threads`` intra-op threads (0: ONNX Runtime's default), one
    inter-op thread and quiet logs; ``optimize=False`` turns graph optimizations off (how the exported QDQ
    model is checked against the simulation)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
