"""Worker pools: the transport between a step and its workers (Ray actors, or one in-process worker).

A pool hosts one object per worker, built by a factory from a spec sent once (:class:`sweeper.replica.Replica`
from a :class:`sweeper.replica.WorkerSpec`), and moves calls to it by method name (``map_calls``,
``map_dynamic``) and evaluations of profiles (``map_unordered``), with results returned as they complete.
This module is the interface (:class:`WorkerPool`) and the front door (:func:`make_pool`: which pool, started
on first use); the pools are :mod:`sweeper.cluster.ray_pool` and :mod:`sweeper.cluster.local_pool`, the Ray
runtime's start and stop :mod:`sweeper.cluster.runtime`. What a worker computes is not here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from sweeper.cluster.local_pool import InProcessPool
from sweeper.cluster.protocol import PoolClosed, Result, WorkerFactory
from sweeper.cluster.ray_pool import RayPool
from sweeper.quant.profile import Profile


class WorkerPool(Protocol):
    size: int

    def map_unordered(self, profiles: Iterable[Profile], reference: Profile | None = None,
                      target: Any = None) -> Iterator[Result]: ...

    def map_calls(self, method: str, calls: list[tuple[Any, ...]]) -> Iterator[tuple[int, Any]]: ...

    def map_dynamic(self, method: str, next_call: Callable[[], tuple[Any, tuple[Any, ...]] | None]
                    ) -> Iterator[tuple[Any, Any]]: ...

    def close(self) -> None: ...


class LazyPool:
    """Starts the real pool on first use (a fully resumed sweep needs no workers at all)."""

    def __init__(self, kind: str, factory: WorkerFactory, spec: Any, workers: int, address: str | None = None
                 ) -> None:
        self.kind, self.factory, self.spec, self.size, self.address = kind, factory, spec, workers, address
        self.pool: InProcessPool | RayPool | None = None
        self.startup_seconds = 0.0  # time spent starting the runtime and the workers (not evaluating)
        self._closed: InProcessPool | RayPool | None = None
        self.closed = False

    def started(self) -> InProcessPool | RayPool:
        if self.closed:  # a late call from another thread must not start a second pool (and Ray runtime)
            raise PoolClosed("the worker pool is closed (the step failed or was interrupted)")
        if self.pool is None:
            t0 = time.perf_counter()
            if self.kind == "local":
                self.pool = InProcessPool(self.factory, self.spec)
            else:
                pool = RayPool(self.factory, self.spec, self.size, self.address)
                try:
                    pool.wait_ready()
                except BaseException:
                    pool.close()  # its actors, and the runtime if it started one
                    raise
                self.pool = pool
            self.startup_seconds += time.perf_counter() - t0
        return self.pool

    def map_unordered(self, profiles: Iterable[Profile], reference: Profile | None = None,
                      target: Any = None) -> Iterator[Result]:
        """Evaluate profiles in any order; with ``target`` (a :class:`~sweeper.eval.target.Target`) each stops
        as soon as it cannot meet it."""
        todo = list(profiles)
        if not todo:
            return iter(())
        return self.started().map_unordered(todo, reference, target)

    def map_calls(self, method: str, calls: list[tuple[Any, ...]]) -> Iterator[tuple[int, Any]]:
        if not calls:
            return iter(())
        return self.started().map_calls(method, calls)

    def map_dynamic(self, method: str, next_call: Callable[[], tuple[Any, tuple[Any, ...]] | None]
                    ) -> Iterator[tuple[Any, Any]]:
        return self.started().map_dynamic(method, next_call)

    def faults(self) -> dict[str, Any]:
        """The Ray pool's record of replaced workers and lost nodes (:meth:`RayPool.faults`); none in process."""
        pool = self.pool or self._closed
        if isinstance(pool, RayPool):
            return pool.faults()
        return {"replaced_workers": 0, "reevaluated": 0, "lost_nodes": []}

    def close(self) -> None:
        self.closed = True
        if self.pool is not None:
            self._closed, self.pool = self.pool, None
            self._closed.close()


def make_pool(kind: str, factory: WorkerFactory, spec: Any, workers: int, address: str | None = None
              ) -> WorkerPool:
    """A worker pool hosting ``factory(spec, ...)`` per worker: ``ray`` (actors, the default) or ``local``
    (in process), started on first use."""
    if kind not in ("ray", "local"):
        raise ValueError(f"unknown pool {kind!r}: expected ray or local")
    return LazyPool(kind, factory, spec, workers, address)
