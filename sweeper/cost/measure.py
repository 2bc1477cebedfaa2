"""Measured ONNX Runtime CPU latency of an exported model (beside the CostModel's estimate)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np


def measure_latency_ms(model: Path | bytes, feeds: Mapping[str, np.ndarray], repeats: int = 15,
                       budget_s: float = 0.3, min_runs: int = 5) -> float:
    """Median latency (ms) of one ONNX Runtime CPU run on ``feeds``: 1 thread, default optimizations, one
    warm-up run, then up to ``repeats`` timed runs (at least ``min_runs``, stopping once ``budget_s`` is spent)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(model if isinstance(model, bytes) else str(model), so,
                                providers=["CPUExecutionProvider"])
    sess.run(None, dict(feeds))
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (len(times) < min_runs or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        sess.run(None, dict(feeds))
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)
