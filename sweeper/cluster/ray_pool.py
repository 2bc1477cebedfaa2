"""The Ray pool: worker actors (:class:`RayWorker`) spread over the cluster's nodes, dispatch that keeps every
worker busy, replacement of workers that die (and re-running their calls), and a shutdown that waits for
the threads inside Ray. Ray is imported inside the functions (and the pool's constructor)."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sweeper.cluster.protocol import PoolClosed, Result, WorkerFactory, result_from
from sweeper.cluster.runtime import quiet_ray_env, ray_runtime
from sweeper.quant.profile import Profile

POLL_SECONDS = 0.2  # longest single wait inside Ray: how soon a closing pool sees its other threads leave
CLOSE_WAIT_SECONDS = 60.0  # how long close() waits for another thread's Ray call before giving up on shutdown
START_WAIT_SECONDS = 120.0  # how long a pool with no live worker waits for replacements to start


class _Gate:
    """Counts the threads inside a Ray call of one pool. Once closed no thread enters, and the pool waits for
    those inside to leave before it shuts Ray down: a thread calling into Ray's core worker while or after it
    shuts down ends the whole process (Ray's QuickExit: exit status 1, no cleanup, nothing printed)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._inside: dict[int, int] = {}  # thread id -> Ray calls it is inside
        self.closed = False

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self.closed:
                raise PoolClosed("the worker pool is closed (the step failed or was interrupted)")
            self._inside[me] = self._inside.get(me, 0) + 1
        try:
            yield
        finally:
            with self._cond:
                self._inside[me] -= 1
                if not self._inside[me]:
                    del self._inside[me]
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True

    def drain(self, timeout: float) -> bool:
        """True once no other thread is inside a Ray call (False: one still is after ``timeout`` seconds). The
        closing thread itself does not count: a Ctrl-C may have left it marked inside between two bytecodes."""
        me = threading.get_ident()
        with self._cond:
            return self._cond.wait_for(lambda: not (set(self._inside) - {me}), timeout)


@dataclass
class _Actor:
    """What the pool knows of one actor: the handle, its start-up probe, where it runs once it answered."""

    handle: Any
    probe: Any  # ObjectRef of its where() call
    ready: bool = False
    node: str = ""
    pid: int = 0


class RayPool:
    """Worker actors (:class:`RayWorker`) on Ray, spread over the cluster's nodes. The spec goes through the object store once;
    dispatch keeps every worker busy and yields results as they complete. A worker that dies (its process
    killed, its node lost) is replaced by a new actor, which Ray places on a live node, and the calls it had
    are run again; a replacement gets calls once it has started. Lost nodes are reported (:meth:`faults`).
    Closing the pool while other threads have calls running ends those calls with :class:`PoolClosed` and
    shuts Ray down only once no thread is inside it."""

    def __init__(self, factory: WorkerFactory, spec: Any, workers: int, address: str | None = None) -> None:
        quiet_ray_env()
        import ray

        self._ray = ray
        self._gate = _Gate()
        # joins the runtime a caller started (ray_runtime, a cluster), else starts and later stops its own
        self._runtime = ray_runtime(address, max(workers * spec.threads, os.cpu_count() or 1)).__enter__()
        self._spec_ref = ray.put(spec)  # one copy in the object store, shared by every actor
        self._factory = factory
        self._actor_cls = ray.remote(num_cpus=spec.threads, scheduling_strategy="SPREAD")(RayWorker)
        self._made = 0
        self._lock = threading.RLock()
        self._info: dict[int, _Actor] = {}  # id(handle) -> what we know (holds every handle made)
        self._successor: dict[int, Any] = {}
        self._dead: list[tuple[str, int]] = []  # (node, evaluations re-run) of every actor that died
        self._announced: set[str] = set()
        self._final_faults: dict[str, Any] | None = None
        self.actors = [self._new_actor() for _ in range(workers)]
        self.size = workers
        self.replaced = 0
        self.max_replacements = 2 * workers + 2

    def _new_actor(self) -> Any:
        actor = self._actor_cls.remote(self._factory, self._spec_ref, f"ray-{self._made}")
        self._made += 1
        self._info[id(actor)] = _Actor(actor, actor.where.remote())
        return actor

    def info(self, actor: Any) -> _Actor:
        return self._info[id(actor)]

    def answered(self, actor: Any) -> None:
        """Record where a started actor runs (its probe is done); raises RayActorError if it died starting."""
        info = self._info[id(actor)]
        if not info.ready:
            with self._gate.call():
                info.pid, info.node = self._ray.get(info.probe)
            info.ready = True

    def _replace(self, actor: Any) -> Any:
        """The replacement of a dead actor (made here if nobody did yet, on a live node); None once the pool is
        closed or has made its quota of replacements (the pool then goes on with fewer workers)."""
        with self._lock:
            if all(a is not actor for a in self.actors):
                successor = self._successor.get(id(actor))
                return successor if any(a is successor for a in self.actors) else None
            self._dead.append((self._info[id(actor)].node, 0))
            with self._gate.call(), contextlib.suppress(Exception):  # not left holding a CPU if it still runs
                self._ray.kill(actor)
            self._announce_lost_nodes()
            if self.replaced >= self.max_replacements:
                self.actors = [a for a in self.actors if a is not actor]
                return None
            with self._gate.call():
                replacement = self._new_actor()
            self._successor[id(actor)] = replacement
            self.replaced += 1
            self.actors = [replacement if a is actor else a for a in self.actors]
            return replacement

    def _rerun(self, actor: Any, method: str) -> None:
        """Count a call of a dead actor that runs again (profiles re-evaluated, per lost node)."""
        if method != "evaluate":
            return
        node = self._info[id(actor)].node
        with self._lock:
            for i, (n, count) in enumerate(self._dead):
                if n == node:
                    self._dead[i] = (n, count + 1)
                    return

    def _alive_nodes(self, gated: bool = True) -> set[str]:
        with self._gate.call() if gated else contextlib.nullcontext():
            return {n["NodeID"] for n in self._ray.nodes() if n["Alive"]}

    def _announce_lost_nodes(self) -> None:
        """One line on stderr the first time a node the pool's workers ran on is seen dead."""
        nodes = {n for n, _ in self._dead if n} - self._announced
        if not nodes:
            return
        for node in sorted(nodes - self._alive_nodes()):
            self._announced.add(node)
            print(f"sweeper: lost node {node}: its workers are replaced on the remaining nodes and their "
                  "evaluations run again", file=sys.stderr, flush=True)

    def faults(self) -> dict[str, Any]:
        """What went wrong during the run: workers replaced, nodes lost (with the workers each took and the
        profiles re-evaluated because of it), profiles re-evaluated in all. Final once the pool is closed."""
        if self._final_faults is not None:
            return self._final_faults
        return self._faults(self._alive_nodes() if self._dead else set())

    def _faults(self, alive: set[str]) -> dict[str, Any]:
        with self._lock:
            dead = list(self._dead)
        lost: dict[str, dict[str, Any]] = {}
        for node, count in dead:
            if node and node not in alive:
                entry = lost.setdefault(node, {"node": node, "workers": 0, "reevaluated": 0})
                entry["workers"] += 1
                entry["reevaluated"] += count
        return {"replaced_workers": self.replaced, "reevaluated": sum(c for _, c in dead),
                "lost_nodes": list(lost.values())}

    def wait_ready(self) -> None:
        """Block until every actor is constructed (its QuantSim built); an actor that dies while starting
        is replaced once, a second failure is an error."""
        for attempt in range(2):
            dead = self._await_started(list(self.actors))
            if not dead:
                return
            if attempt == 1:
                raise RuntimeError(f"{len(dead)} of {len(self.actors)} workers could not start: {dead[0][1]}")
            for actor, _ in dead:
                self._replace(actor)

    def _await_started(self, actors: list[Any]) -> list[tuple[Any, BaseException]]:
        pending = {self.info(a).probe: a for a in actors if not self.info(a).ready}
        dead: list[tuple[Any, BaseException]] = []
        while pending:
            with self._gate.call():
                done, _ = self._ray.wait(list(pending), num_returns=len(pending), timeout=POLL_SECONDS)
            for ref in done:
                actor = pending.pop(ref)
                try:
                    self.answered(actor)
                except _lost_worker_errors() as exc:
                    dead.append((actor, exc))
        return dead

    def worker_pids(self) -> list[int]:
        with self._gate.call():
            return list(self._ray.get([a.pid.remote() for a in self.actors]))

    def map_calls(self, method: str, calls: list[tuple[Any, ...]]) -> Iterator[tuple[int, Any]]:
        """Call ``method(*args)`` on the workers for every args tuple; yield (index, result) as they finish.
        Each worker holds two calls (one running, one queued), so it never waits for the driver."""
        it = iter(enumerate(calls))
        return self.map_dynamic(method, lambda: next(it, None), depth=2)

    def map_dynamic(self, method: str, next_call: Callable[[], tuple[Any, tuple[Any, ...]] | None],
                    depth: int = 1) -> Iterator[tuple[Any, Any]]:
        """Whenever a worker has fewer than ``depth`` calls in flight, ask ``next_call()`` for ``(tag, args)``
        (None: nothing more for now) and run ``method(*args)`` on it; yield ``(tag, result)`` as calls
        finish. Asynchronous ask/tell searches use this (depth 1) to keep every worker busy. Raises
        :class:`PoolClosed` when the pool is closed meanwhile (by another thread)."""
        d = _Dispatch(self, method, depth)
        exhausted = False
        while True:
            if self._gate.closed:
                raise PoolClosed("the worker pool is closed (the step failed or was interrupted)")
            exhausted = d.submit(next_call, exhausted)
            if not d.running:
                if exhausted and not d.retry:
                    return
                if not d.starting:
                    if not d.slots:
                        raise RuntimeError("no worker left in the pool (closed, or died without a replacement)")
                    exhausted = False  # the producer may have more now (e.g. after a result was told)
                    continue
                d.check_start_deadline()
            for item in d.collect():
                exhausted = False
                yield item

    def map_unordered(self, profiles: Iterable[Profile], reference: Profile | None = None,
                      target: Any = None) -> Iterator[Result]:
        """Evaluate profiles (two calls in flight per worker). Under a ``reference``, the first worker that
        completes the reference's store publishes it and later calls hand it to the others (not once its
        owner's node is lost). With ``target``, each evaluation stops once the profile cannot meet it."""
        ref = None if reference is None else reference.to_json()
        it = iter(profiles)
        shared: list[Any] = []
        owner = [""]

        def next_call() -> tuple[Any, tuple[Any, ...]] | None:
            p = next(it, None)
            if p is None:
                return None
            if shared and any(n == owner[0] for n, _ in self._dead):
                shared.clear()  # its owner may be gone: the next worker to complete a store publishes it
            return None, (p.to_json(), ref, shared[:1] or None, target)

        for _, ev in self.map_dynamic("evaluate", next_call, depth=2):
            if ev.store is not None:  # the newest one: its owner is alive
                shared[:] = ev.store
                owner[0] = ev.node
            yield result_from(ev)

    def close(self) -> None:
        """Stop the workers and (if this pool started it) Ray. Calls other threads have running end with
        :class:`PoolClosed`; Ray is shut down only once no thread is inside it (see :class:`_Gate`)."""
        self._gate.close()
        with self._lock:
            handles, self.actors = [i.handle for i in self._info.values()], []
        for a in handles:  # their running calls fail at once, so threads waiting on them leave Ray
            try:
                self._ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
        quiet = self._gate.drain(CLOSE_WAIT_SECONDS)
        if self._final_faults is None:
            alive = {n for n, _ in self._dead} - self._announced  # unless asked: the nodes seen dead so far
            if quiet and self._dead:
                with contextlib.suppress(Exception):  # the only thread in Ray now: the cluster's own view
                    alive = self._alive_nodes(gated=False)
            self._final_faults = self._faults(alive)
            self._summarize(self._final_faults)
        if quiet:
            self._runtime.__exit__()
        else:  # shutting Ray down now would end this process at once (see _Gate)
            print("sweeper: a worker call did not end; Ray is left to stop when this process exits",
                  file=sys.stderr, flush=True)

    @staticmethod
    def _summarize(faults: dict[str, Any]) -> None:
        """The closing line about each lost node (stderr): the workers it took, profiles re-evaluated."""
        for entry in faults["lost_nodes"]:
            workers, again = entry["workers"], entry["reevaluated"]
            print(f"sweeper: lost node {entry['node']} ({workers} worker{'s' if workers != 1 else ''}); "
                  f"{again} profile{'s' if again != 1 else ''} re-evaluated on the remaining nodes",
                  file=sys.stderr, flush=True)


def _raise_user_error(exc: BaseException) -> None:
    """A worker's :class:`~sweeper.errors.SweeperError` (a user metric that failed on a profile, bad data)
    raised on the driver as itself: its one line, not Ray's task error around the worker's traceback."""
    from sweeper.errors import SweeperError

    cause = getattr(exc, "cause", None)
    if isinstance(cause, SweeperError):
        raise SweeperError(cause.where, cause.message) from None


def _lost_worker_errors() -> tuple[type[BaseException], ...]:
    """What a call raises when its worker is gone: the actor died (process killed, node lost), its node died,
    or the result was lost with the node's object store before the driver fetched it."""
    from ray.exceptions import NodeDiedError, ObjectLostError, RayActorError

    return RayActorError, NodeDiedError, ObjectLostError


class _Dispatch:
    """One map_dynamic call's bookkeeping: free call slots (one per call a worker may hold), calls running,
    calls to run again after their worker died, and replacements still starting (given calls once started)."""

    def __init__(self, pool: RayPool, method: str, depth: int) -> None:
        self.pool, self.method, self.depth = pool, method, depth
        self.slots: list[Any] = []
        self.running: dict[Any, tuple[Any, Any, tuple[Any, ...]]] = {}
        self.starting: dict[Any, Any] = {}  # probe ref -> actor not started yet
        self.retry: list[tuple[Any, tuple[Any, ...]]] = []
        self.no_worker_since: float | None = None
        for actor in list(pool.actors):
            self._take(actor)

    def _take(self, actor: Any) -> None:
        """Give an actor of the pool calls (now if it has started, else once it has)."""
        mine = (any(a is actor for a in self.slots) or any(a is actor for a, _, _ in self.running.values())
                or any(a is actor for a in self.starting.values()))
        if mine:
            return
        info = self.pool.info(actor)
        if info.ready:
            self.slots.extend([actor] * self.depth)
        else:
            self.starting[info.probe] = actor

    def submit(self, next_call: Callable[[], tuple[Any, tuple[Any, ...]] | None], exhausted: bool) -> bool:
        """Fill free slots with calls to run again, then new ones; returns whether the producer ran dry."""
        while self.slots and (self.retry or not exhausted):
            call = self.retry.pop(0) if self.retry else next_call()
            if call is None:
                return True
            actor = self._least_busy_slot()
            tag, args = call
            with self.pool._gate.call():
                self.running[actor.call.remote(self.method, *args)] = (actor, tag, args)
        return exhausted

    def _least_busy_slot(self) -> Any:
        """Take the free slot of the worker with the fewest calls in flight: a round of fewer calls than slots
        (two per worker) goes to as many workers as it can, not two to the first one."""
        busy: dict[int, int] = {}
        for a, _, _ in self.running.values():
            busy[id(a)] = busy.get(id(a), 0) + 1
        i = min(range(len(self.slots)), key=lambda k: (busy.get(id(self.slots[k]), 0), k))
        return self.slots.pop(i)

    def check_start_deadline(self) -> None:
        """No call running, only replacements starting: they have START_WAIT_SECONDS to come up."""
        now = time.monotonic()
        if self.no_worker_since is None:
            self.no_worker_since = now
        elif now - self.no_worker_since > START_WAIT_SECONDS:
            raise RuntimeError(f"no worker left in the pool: the replacements of lost workers did not start in "
                               f"{START_WAIT_SECONDS:.0f} s (no free CPU on the remaining nodes?)")

    def collect(self) -> list[tuple[Any, Any]]:
        """Wait (at most POLL_SECONDS) for a call to finish or a replacement to start; the finished results."""
        lost_worker = _lost_worker_errors()
        ray, gate = self.pool._ray, self.pool._gate
        with gate.call():
            done, _ = ray.wait([*self.running, *self.starting], num_returns=1, timeout=POLL_SECONDS)
        out: list[tuple[Any, Any]] = []
        for ref in done:
            if ref in self.starting:
                self._started(self.starting.pop(ref))
                continue
            actor, tag, args = self.running.pop(ref)
            try:
                with gate.call():
                    result = ray.get(ref)
            except lost_worker:  # the worker died (its process, or its node): its calls run again
                self.retry.append((tag, args))
                self._lost(actor)
                self.pool._rerun(actor, self.method)
                continue
            except Exception as exc:  # noqa: BLE001
                _raise_user_error(exc)
                raise
            self.slots.append(actor)
            self.no_worker_since = None
            out.append((tag, result))
        return out

    def _started(self, actor: Any) -> None:
        try:
            self.pool.answered(actor)
        except _lost_worker_errors():  # died while starting (e.g. placed on a node that was going away)
            self._lost(actor)
            return
        self.slots.extend([actor] * self.depth)

    def _lost(self, actor: Any) -> None:
        self.slots = [a for a in self.slots if a is not actor]
        replacement = self.pool._replace(actor)
        if replacement is not None:
            self._take(replacement)


class RayWorker:
    """The Ray actor hosting one worker object (``factory(spec, name, self)``); it is also that object's
    exchange: payloads go through the object store, and it knows its node."""

    def __init__(self, factory: WorkerFactory, spec: Any, name: str) -> None:
        import ray

        self._node = ray.get_runtime_context().get_node_id()
        self.impl = factory(spec, name, self)

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self.impl, method)(*args)

    def where(self) -> tuple[int, str]:
        """(process id, node id): the pool's start-up probe, answered once the worker object is built."""
        return os.getpid(), self._node

    def pid(self) -> int:
        return os.getpid()

    def share(self, payload: dict[str, Any]) -> Any:
        import ray

        return [ray.put(payload)]  # in a list: the driver passes it on without fetching it

    def fetch(self, store: Any) -> dict[str, Any] | None:
        import ray

        try:
            return ray.get(store[0], timeout=60)
        except Exception:  # noqa: BLE001 - its owner died: the caller computes the store instead
            return None

    def node_id(self) -> str:
        return self._node
