"""Worker pools: the transport to workers on Ray actors (default) or in process (debugging, unit tests).

This is the only package that imports ray; what the workers compute is :mod:`sweeper.replica`. Modules:
:mod:`.pool` (the WorkerPool interface and make_pool), :mod:`.ray_pool`, :mod:`.local_pool`, :mod:`.runtime`
(the Ray runtime's start and stop), :mod:`.protocol` (Result, PoolClosed, the worker factory).
"""

from __future__ import annotations

from sweeper.cluster.local_pool import InProcessPool
from sweeper.cluster.pool import LazyPool, WorkerPool, make_pool
from sweeper.cluster.protocol import PoolClosed, Result
from sweeper.cluster.ray_pool import RayPool

__all__ = ["InProcessPool", "LazyPool", "PoolClosed", "RayPool", "Result", "WorkerPool", "make_pool"]
