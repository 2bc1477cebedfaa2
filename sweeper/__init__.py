"""sweeper: distributed experiment-sweep orchestrator for post-training quantization of ONNX models.

The Python API (imported lazily, so ``import sweeper`` stays cheap): :func:`experiment` builds an
experiment in code, :class:`Session` runs any workflow step on it (see :mod:`sweeper.api`);
:func:`per_sample_metric` declares a user metric's per-sample scores so its evaluations can stop early.
"""

from __future__ import annotations

from typing import Any

from sweeper.version import __version__

__all__ = ["Experiment", "Session", "SweeperError", "__version__", "experiment", "load_experiment",
           "per_sample_metric"]


def __getattr__(name: str) -> Any:
    if name in ("Session", "experiment"):
        from sweeper import api

        return getattr(api, name)
    if name in ("Experiment", "load_experiment"):
        from sweeper.config import experiment as config

        return getattr(config, name)
    if name == "per_sample_metric":
        from sweeper.eval.early import per_sample_metric

        return per_sample_metric
    if name == "SweeperError":
        from sweeper.errors import SweeperError

        return SweeperError
    raise AttributeError(f"module 'sweeper' has no attribute {name!r}")
