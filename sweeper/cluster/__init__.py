"""Worker pools: SimWorker replicas on Ray actors (default) or in-process (debugging, unit tests).

This is the only package that imports ray.
"""

from __future__ import annotations

from sweeper.cluster.pool import (
    InProcessPool,
    LazyPool,
    PoolClosed,
    RayPool,
    Result,
    WorkerPool,
    WorkerSpec,
    make_pool,
)

__all__ = ["InProcessPool", "LazyPool", "PoolClosed", "RayPool", "Result", "WorkerPool", "WorkerSpec", "make_pool"]
