"""sweeper: distributed experiment-sweep orchestrator for post-training quantization of ONNX models.

The Python API (imported lazily, so ``import sweeper`` stays cheap): :func:`experiment` builds an
experiment in code, :class:`Session` runs any workflow step on it (see :mod:`sweeper.api`).
"""

from __future__ import annotations

from typing import Any

from sweeper.version import __version__

__all__ = ["Experiment", "Session", "SweeperError", "__version__", "experiment", "load_experiment"]


def __getattr__(name: str) -> Any:
    if name in ("Session", "experiment"):
        from sweeper import api

        return getattr(api, name)
    if name in ("Experiment", "load_experiment"):
        from sweeper.config import experiment as config

        return getattr(config, name)
    if name == "SweeperError":
        from sweeper.errors import SweeperError

        return SweeperError
    raise AttributeError(f"module 'sweeper' has no attribute {name!r}")
