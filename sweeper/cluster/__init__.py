"""Worker pools: the transport to workers on Ray actors (default) or in process (debugging, unit tests).

This is the only package that imports ray; what the workers compute is :mod:`sweeper.replica`.
"""

from __future__ import annotations

from sweeper.cluster.pool import (
    InProcessPool,
    LazyPool,
    PoolClosed,
    RayPool,
    Result,
    WorkerPool,
    make_pool,
)

__all__ = ["InProcessPool", "LazyPool", "PoolClosed", "RayPool", "Result", "WorkerPool", "make_pool"]
