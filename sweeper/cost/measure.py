"""Measured ONNX Runtime CPU latency of exported models (beside the CostModel's estimate).

Sessions run as a user would run the exported model: CPU EP, 1 intra-op and 1 inter-op thread, the default
graph optimizations. :func:`measure_interleaved` is the one to compare models with: it holds every session
at once and runs them in turn, round after round, so that load from other processes on a shared machine
falls on every model alike; it reports the median and spread of the rounds **per sample** (run time / batch).
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Measured latency of one model, in ms per sample (one run's wall time / ``batch``) over ``runs`` runs;
    ``cpu_*``: the same for the CPU time of the thread that ran it (with 1 thread ONNX Runtime computes in
    the calling thread), which time slices lost to other processes on a shared machine do not inflate."""

    batch: int
    runs: int
    median: float
    q1: float
    q3: float
    min: float
    max: float
    cpu_median: float = float("nan")
    cpu_q1: float = float("nan")
    cpu_q3: float = float("nan")

    @staticmethod
    def from_times(seconds: list[float], batch: int, cpu_seconds: list[float] | None = None) -> LatencyStats:
        ms = np.asarray(seconds, dtype=np.float64) * 1e3 / batch
        q1, med, q3 = np.percentile(ms, [25, 50, 75])
        cpu = np.percentile(np.asarray(cpu_seconds, dtype=np.float64) * 1e3 / batch, [25, 50, 75]) \
            if cpu_seconds else [float("nan")] * 3
        return LatencyStats(batch=batch, runs=len(seconds), median=float(med), q1=float(q1), q3=float(q3),
                            min=float(ms.min()), max=float(ms.max()), cpu_median=float(cpu[1]),
                            cpu_q1=float(cpu[0]), cpu_q3=float(cpu[2]))

    def spread_json(self) -> dict[str, float | int]:
        """The spread beside the median: interquartile range, min/max, number of runs, batch, and the thread
        CPU time's median and interquartile range."""
        return {"q1": self.q1, "q3": self.q3, "min": self.min, "max": self.max, "runs": self.runs,
                "batch": self.batch, "cpu_median": self.cpu_median, "cpu_q1": self.cpu_q1, "cpu_q3": self.cpu_q3}


def cpu_session(model: Path | bytes) -> Any:
    """An ONNX Runtime CPU session as a user would make one, with 1 thread."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), so,
                                providers=["CPUExecutionProvider"])


def _batch_of(feeds: Mapping[str, np.ndarray]) -> int:
    first = next(iter(feeds.values()))
    return int(first.shape[0]) if first.ndim > 0 else 1


def measure_interleaved(models: Mapping[str, Path | bytes], feeds: Mapping[str, np.ndarray], *,
                        rounds: int = 15, min_rounds: int = 5, budget_s: float = 20.0,
                        seed: int = 0) -> dict[str, LatencyStats]:
    """Per-sample latency of each model, measured in interleaved rounds: every round runs each model once,
    in a shuffled order; ``rounds`` rounds (at least ``min_rounds``, fewer once ``budget_s`` is spent).
    One warm-up run per model first. Ratios between the models are what this is for."""
    if not models:
        return {}
    feeds = dict(feeds)
    batch = _batch_of(feeds)
    sessions = {name: cpu_session(m) for name, m in models.items()}
    for sess in sessions.values():
        sess.run(None, feeds)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    cpu: dict[str, list[float]] = {name: [] for name in sessions}
    order = list(sessions)
    rng = random.Random(seed)
    start = time.perf_counter()
    done = 0
    while done < rounds and (done < min_rounds or time.perf_counter() - start < budget_s):
        rng.shuffle(order)
        for name in order:
            t0, c0 = time.perf_counter(), time.thread_time()
            sessions[name].run(None, feeds)
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.thread_time() - c0)
        done += 1
    return {name: LatencyStats.from_times(ts, batch, cpu[name]) for name, ts in times.items()}
