"""WorkerPool: evaluate Profiles on QuantSim replicas, results returned as they complete."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from sweeper.quant.profile import Profile

if TYPE_CHECKING:
    from sweeper.sim.quantsim import QuantSim


@dataclass
class WorkerSpec:
    """Everything a worker needs to build its QuantSim; sent once (Ray object store)."""

    model_bytes: bytes
    stats: Any  # CalibrationStats
    quant_config: Any  # QuantConfig
    metric: str
    higher_is_better: bool
    batch_size: int
    input_names: list[str]
    data: dict[str, np.ndarray]
    reference: list[np.ndarray] | None
    threads: int = 1
    precisions: tuple[str, ...] = ()  # every precision a profile may assign (the sweep's candidates)
    probe_data: dict[str, np.ndarray] | None = None  # a calibration batch for per-layer SQNR probes
    probe_tensors: tuple[str, ...] = ()  # tensors the probes compare with FP32
    reuse_mb: float = 0.0  # memory for prefix reuse (sweeper.sim.reuse); 0: every evaluation is a full run


@dataclass
class Result:
    profile: Profile
    metric: float
    eval_seconds: float
    worker: str = ""
    node: str = ""  # Ray node id ("" in process)


class SimWorker:
    """Holds one QuantSim (one ONNX Runtime session) and evaluates profiles on it."""

    def __init__(self, spec: WorkerSpec, name: str = "local") -> None:
        import onnx

        from sweeper.eval.metrics import make_evaluator
        from sweeper.model.graph import ModelGraph
        from sweeper.sim.encodings import EncodingTable
        from sweeper.sim.quantsim import QuantSim

        self.name = name
        model = onnx.load_from_string(spec.model_bytes)
        graph = ModelGraph(model)
        self.table = EncodingTable(graph, spec.stats, spec.quant_config)
        self.sim = QuantSim(graph, self.table, threads=spec.threads, precisions=spec.precisions)
        self.evaluator = make_evaluator(spec.metric, spec.higher_is_better, spec.batch_size, spec.input_names)
        self.data = spec.data
        self.reference = spec.reference
        self.spec = spec
        self._graph = graph
        self._probe: QuantSim | None = None
        self._probe_ref: dict[str, np.ndarray] = {}
        self.reuse = None
        self._shared_for: str | None = None
        if spec.reuse_mb > 0:
            from sweeper.sim.reuse import PrefixReuse

            samples = len(next(iter(spec.data[k] for k in spec.input_names)))
            self.reuse = PrefixReuse(self.sim, spec.stats.shapes, samples, spec.reuse_mb)
            self.reuse.build(warmup=self._first_batch())
        self.sim.apply(Profile.uniform([g.name for g in graph.groups], self.sim.precisions[-1]))
        self.sim.run(self._first_batch())  # ONNX Runtime's first run sets up its memory: not in a sweep's time
        import sweeper.report.amp  # noqa: F401 - plot modules imported now, not on a step's critical path
        import sweeper.report.sensitivity  # noqa: F401

        if spec.probe_data is not None:  # an analysis pool: probes prepared at start-up
            self._probe_sim()

    def _first_batch(self) -> dict[str, np.ndarray]:
        return {k: self.data[k][: self.spec.batch_size] for k in self.spec.input_names}

    def evaluate(self, profile_json: dict[str, str], reference_json: dict[str, str] | None = None,
                 store: list[Any] | None = None) -> tuple[dict[str, str], float, float, str, str, Any]:
        """The metric of a profile. With a ``reference`` profile (one most profiles of the call share a
        prefix with), later profiles run from the reference's stored activations (sweeper.sim.reuse).
        ``store``: another worker's complete store for that reference, to take instead of computing it.
        Returns (profile, metric, seconds, worker, node, this worker's store when it has just completed it)."""
        profile = Profile.from_json(profile_json)
        t0 = time.perf_counter()
        reference = None if reference_json is None else Profile.from_json(reference_json)
        metric = self._metric(profile, reference, store)
        return profile_json, metric, time.perf_counter() - t0, self.name, self.node_id(), self._published()

    def _metric(self, profile: Profile, reference: Profile | None, store: list[Any] | None) -> float:
        reuse = self.reuse
        if reuse is None or reference is None or not reuse.cuts:
            self.sim.apply(profile)
            return float(self.evaluator.evaluate(self.sim.run, self.data, self.reference))
        reuse.set_reference(reference)
        if store and not reuse.complete():
            payload = self._fetch(store)
            if payload is not None and reuse.install(payload):
                reuse.stats["installed"] = reuse.stats.get("installed", 0) + 1
                self._shared_for = reference.key  # taken from another worker: nothing new to publish
        metric = float(self.evaluator.evaluate(reuse.run_fn(profile), self.data, self.reference))
        reuse.finish_run()
        return metric

    def reuse_stats(self) -> dict[str, int]:
        """Counters of prefix reuse on this worker (captures, suffix and full batches, stores installed)."""
        return {} if self.reuse is None else dict(self.reuse.stats)

    def _published(self) -> Any:
        """A handle other workers can fetch this worker's complete store with (once per reference)."""
        reuse = self.reuse
        if reuse is None or not reuse.complete() or reuse.reference is None:
            return None
        if self._shared_for == reuse.reference.key:
            return None
        self._shared_for = reuse.reference.key
        payload = reuse.export()
        return None if payload is None else self._share(payload)

    def _share(self, payload: dict[str, Any]) -> Any:  # in one process there is nobody to share with
        return None

    def _fetch(self, store: list[Any]) -> dict[str, Any] | None:
        return None

    def _probe_sim(self) -> QuantSim:
        """A second simulation exposing every group's layer output, with its FP32 reference values."""
        from sweeper.quant.precision import FP32
        from sweeper.sim.quantsim import QuantSim

        if self._probe is None:
            self._probe = QuantSim(self._graph, self.table, threads=self.spec.threads,
                                   precisions=self.spec.precisions, extra_outputs=self.spec.probe_tensors)
            self._probe.apply(Profile.uniform([g.name for g in self._graph.groups], FP32))
            outs = self._probe.run_named(self.spec.probe_data or {})
            self._probe_ref = {t: outs[t] for t in self.spec.probe_tensors}
        return self._probe

    def render_plot(self, doc: dict[str, Any], name: str) -> bytes | None:
        """Render one plot of a report (idle workers draw the report's plots in parallel)."""
        return render_plot(doc, name)

    def measure_latency(self, model: bytes) -> float:
        """Measured ONNX Runtime CPU latency (ms, 1 thread) of an exported model on one evaluation batch."""
        from sweeper.cost.measure import measure_latency_ms

        return measure_latency_ms(model, self._first_batch())

    def layer_sqnr(self, profile_json: dict[str, str], tensor: str) -> float:
        """SQNR (dB) of ``tensor`` under ``profile`` vs FP32, on the probe (calibration) batch."""

        probe = self._probe_sim()
        probe.apply(Profile.from_json(profile_json))
        out = probe.run_named(self.spec.probe_data or {})[tensor].astype(np.float64)
        ref = self._probe_ref[tensor].astype(np.float64)
        noise = float(np.sum((ref - out) ** 2))
        signal = float(np.sum(ref ** 2))
        if noise == 0.0:
            return 100.0
        return float(min(100.0, 10.0 * np.log10(max(signal, 1e-30) / noise)))

    def node_id(self) -> str:
        return ""

    def pid(self) -> int:
        return os.getpid()


def render_plot(doc: dict[str, Any], name: str) -> bytes | None:
    """One plot of a step's report as PNG bytes: ``amp_pareto`` or a sensitivity report plot."""
    if name == "amp_pareto":
        from sweeper.report.amp import render_pareto

        return render_pareto(doc)
    from sweeper.report.sensitivity import render_plot as sensitivity_plot

    return sensitivity_plot(doc, name)


def render_in_background(pool: WorkerPool, doc: dict[str, Any], name: str) -> Future[bytes | None]:
    """Render a plot on an idle worker while the caller goes on (here, when the pool never started)."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sweeper-plot")

    def render() -> bytes | None:
        if isinstance(pool, LazyPool) and pool.pool is None:  # do not start workers just to draw
            return render_plot(doc, name)
        try:
            return next(iter(pool.map_calls("render_plot", [(doc, name)])))[1]
        except Exception:  # noqa: BLE001 - a plot must not cost the results: draw it here instead
            return render_plot(doc, name)

    future = executor.submit(render)
    executor.shutdown(wait=False)
    return future


def measure_on_workers(pool: WorkerPool, models: dict[str, Path]) -> dict[str, float]:
    """Measured latency (ms) of exported models, one model per worker at a time (each worker runs on its own
    CPU, 1 thread); here, in process, when the pool never started."""
    if not models:
        return {}
    names = list(models)
    if isinstance(pool, LazyPool) and pool.pool is None:
        from sweeper.cost.measure import measure_latency_ms

        worker_data = pool.spec.data
        feeds = {k: worker_data[k][: pool.spec.batch_size] for k in pool.spec.input_names}
        return {n: measure_latency_ms(models[n], feeds) for n in names}
    calls = [(models[n].read_bytes(),) for n in names]
    return {names[i]: float(ms) for i, ms in pool.map_calls("measure_latency", calls)}


class WorkerPool(Protocol):
    size: int

    def map_unordered(self, profiles: Iterable[Profile], reference: Profile | None = None) -> Iterator[Result]: ...

    def map_calls(self, method: str, calls: list[tuple[Any, ...]]) -> Iterator[tuple[int, Any]]: ...

    def map_dynamic(self, method: str, next_call: Callable[[], tuple[Any, tuple[Any, ...]] | None]
                    ) -> Iterator[tuple[Any, Any]]: ...

    def close(self) -> None: ...


class InProcessPool:
    """Same interface as the Ray pool, evaluating in this process (for debugging and unit tests)."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.worker = SimWorker(spec, "local-0")
        self.size = 1

    def map_calls(self, method: str, calls: list[tuple[Any, ...]]) -> Iterator[tuple[int, Any]]:
        for i, args in enumerate(calls):
            yield i, getattr(self.worker, method)(*args)

    def map_dynamic(self, method: str, next_call: Callable[[], tuple[Any, tuple[Any, ...]] | None]
                    ) -> Iterator[tuple[Any, Any]]:
        while (call := next_call()) is not None:
            tag, args = call
            yield tag, getattr(self.worker, method)(*args)

    def map_unordered(self, profiles: Iterable[Profile], reference: Profile | None = None) -> Iterator[Result]:
        ref = None if reference is None else reference.to_json()
        for _, out in self.map_calls("evaluate", [(p.to_json(), ref) for p in profiles]):
            pj, metric, secs, name, node, _ = out
            yield Result(Profile.from_json(pj), metric, secs, name, node)

    def close(self) -> None:
        pass


def _quiet_ray_env() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


class ray_runtime:  # noqa: N801 - used as a context manager, like contextlib helpers
    """Start (or join, with an address) one Ray runtime for several pools; shut it down at the end if this
    process started it."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS")
        self.num_cpus = num_cpus
        self.started = False

    def __enter__(self) -> ray_runtime:
        _quiet_ray_env()
        import logging

        import ray

        if not ray.is_initialized():
            kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False,
                                          logging_level=logging.ERROR, configure_logging=True)
            if self.address:
                ray.init(address=self.address, **kwargs)
            else:
                ray.init(num_cpus=self.num_cpus or os.cpu_count() or 1, **kwargs)
            self.started = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            import ray

            ray.shutdown()


class RayPool:
    """SimWorker actors on Ray. The spec goes through the object store once; dispatch keeps every worker
    busy and yields results as they complete. A worker that dies (its process killed, its node lost) is
    replaced by a new actor and its in-flight profile is evaluated again."""

    def __init__(self, spec: WorkerSpec, workers: int, address: str | None = None) -> None:
        import ray

        self._ray = ray
        # joins the runtime a caller started (ray_runtime, a cluster), else starts and later stops its own
        self._runtime = ray_runtime(address, max(workers * spec.threads, os.cpu_count() or 1)).__enter__()
        self._spec_ref = ray.put(spec)  # one copy in the object store, shared by every actor
        self._actor_cls = ray.remote(num_cpus=spec.threads)(_RaySimWorker)
        self._made = 0
        self._lock = threading.Lock()
        self._successor: dict[int, Any] = {}
        self.actors = [self._new_actor() for _ in range(workers)]
        self.size = workers
        self.replaced = 0

    def _new_actor(self) -> Any:
        actor = self._actor_cls.remote(self._spec_ref, f"ray-{self._made}")
        self._made += 1
        return actor

    def _replace(self, actor: Any) -> Any:
        """The live replacement of a dead actor (made here if nobody did yet); None once the pool is closed."""
        with self._lock:
            if any(a is actor for a in self.actors):
                replacement = self._new_actor()
                self._successor[id(actor)] = replacement
                self.actors = [replacement if a is actor else a for a in self.actors]
                self.replaced += 1
                return replacement
            successor = self._successor.get(id(actor))
            return successor if any(a is successor for a in self.actors) else None

    def wait_ready(self) -> None:
        """Block until every actor is constructed (its QuantSim built); an actor that dies while starting
        is replaced once, a second failure is an error."""
        from ray.exceptions import RayActorError

        for attempt in range(2):
            dead = []
            for actor in list(self.actors):
                try:
                    self._ray.get(actor.pid.remote())
                except RayActorError as exc:
                    dead.append((actor, exc))
            if not dead:
                return
            if attempt == 1:
                raise RuntimeError(f"{len(dead)} of {len(self.actors)} workers could not start: {dead[0][1]}")
            for actor, _ in dead:
                self._replace(actor)

    def worker_pids(self) -> list[int]:
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
        finish. Asynchronous ask/tell searches use this (depth 1) to keep every worker busy."""
        ray = self._ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        retry: list[tuple[Any, tuple[Any, ...]]] = []
        slots = [a for _ in range(depth) for a in self.actors]  # one entry per free call slot
        running: dict[Any, tuple[Any, Any, tuple[Any, ...]]] = {}
        exhausted = False
        while True:
            while slots and (retry or not exhausted):
                call = retry.pop(0) if retry else next_call()
                if call is None:
                    exhausted = True
                    break
                actor = slots.pop(0)
                tag, args = call
                running[getattr(actor, method).remote(*args)] = (actor, tag, args)
            if not running:
                if exhausted and not retry:
                    return
                if retry and not slots:
                    raise RuntimeError("no worker left in the pool (closed, or died without a replacement)")
                exhausted = False  # the producer may have more now (e.g. after a result was told)
                continue
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                actor, tag, args = running.pop(ref)
                try:
                    out = ray.get(ref)
                except (RayActorError, ActorDiedError, ActorUnavailableError):
                    # the worker died: replace it (once, whichever thread sees it first) and run its calls again
                    retry.append((tag, args))
                    slots = [a for a in slots if a is not actor]
                    replacement = self._replace(actor)
                    if replacement is not None and all(a is not replacement for a in slots) and all(
                            a is not replacement for a, _, _ in running.values()):
                        slots.extend([replacement] * depth)
                    continue
                slots.append(actor)
                exhausted = False
                yield tag, out

    def map_unordered(self, profiles: Iterable[Profile], reference: Profile | None = None) -> Iterator[Result]:
        """Evaluate profiles (two calls in flight per worker). Under a ``reference``, the first worker that
        completes the reference's store publishes it and later calls hand it to the others."""
        ref = None if reference is None else reference.to_json()
        it = iter(profiles)
        shared: list[Any] = []

        def next_call() -> tuple[Any, tuple[Any, ...]] | None:
            p = next(it, None)
            return None if p is None else (None, (p.to_json(), ref, shared[:1] or None))

        for _, out in self.map_dynamic("evaluate", next_call, depth=2):
            pj, metric, secs, name, node, store = out
            if store is not None:  # the newest one: its owner is alive
                shared[:] = store
            yield Result(Profile.from_json(pj), metric, secs, name, node)

    def close(self) -> None:
        for a in self.actors:
            try:
                self._ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
        with self._lock:
            self.actors = []
        self._runtime.__exit__()


class _RaySimWorker(SimWorker):
    def __init__(self, spec: WorkerSpec, name: str) -> None:
        super().__init__(spec, name)
        import ray

        self._node = ray.get_runtime_context().get_node_id()

    def _share(self, payload: dict[str, Any]) -> Any:
        import ray

        return [ray.put(payload)]  # in a list: the driver passes it on without fetching it

    def _fetch(self, store: list[Any]) -> dict[str, Any] | None:
        import ray

        try:
            return ray.get(store[0], timeout=60)
        except Exception:  # noqa: BLE001 - its owner died: compute the store here instead
            return None

    def node_id(self) -> str:
        return self._node


class LazyPool:
    """Starts the real pool on first use (a fully resumed sweep needs no workers at all)."""

    def __init__(self, kind: str, spec: WorkerSpec, workers: int, address: str | None = None) -> None:
        self.kind, self.spec, self.size, self.address = kind, spec, workers, address
        self.pool: InProcessPool | RayPool | None = None
        self.startup_seconds = 0.0  # time spent starting the runtime and the workers (not evaluating)

    def started(self) -> InProcessPool | RayPool:
        if self.pool is None:
            t0 = time.perf_counter()
            if self.kind == "local":
                self.pool = InProcessPool(self.spec)
            else:
                pool = RayPool(self.spec, self.size, self.address)
                try:
                    pool.wait_ready()
                except BaseException:
                    pool.close()  # its actors, and the runtime if it started one
                    raise
                self.pool = pool
            self.startup_seconds += time.perf_counter() - t0
        return self.pool

    def map_unordered(self, profiles: Iterable[Profile], reference: Profile | None = None) -> Iterator[Result]:
        todo = list(profiles)
        if not todo:
            return iter(())
        return self.started().map_unordered(todo, reference)

    def map_calls(self, method: str, calls: list[tuple[Any, ...]]) -> Iterator[tuple[int, Any]]:
        if not calls:
            return iter(())
        return self.started().map_calls(method, calls)

    def map_dynamic(self, method: str, next_call: Callable[[], tuple[Any, tuple[Any, ...]] | None]
                    ) -> Iterator[tuple[Any, Any]]:
        return self.started().map_dynamic(method, next_call)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None


def make_pool(kind: str, spec: WorkerSpec, workers: int, address: str | None = None) -> WorkerPool:
    """A worker pool: ``ray`` (actors, the default) or ``local`` (in process), started on first use."""
    if kind not in ("ray", "local"):
        raise ValueError(f"unknown pool {kind!r}: expected ray or local")
    return LazyPool(kind, spec, workers, address)
