"""What a worker computes: one replica of the experiment's simulation and the calls steps make on it.

A :class:`Replica` is built from a :class:`WorkerSpec` (sent once through the pool's transport) and answers
the calls a step makes through :mod:`sweeper.cluster` — the pool only moves calls and results; the work is
done here by each concept's own code:

===================== ======================================================================
``evaluate``          the experiment's metric under a profile (:mod:`sweeper.sim.quantsim`,
                      :mod:`sweeper.sim.reuse` prefix reuse, :mod:`sweeper.eval.metrics`)
``fp32_eval``         the same evaluation of the FP32 model (the denominator of every ratio)
``layer_sqnr``        one layer output's SQNR under a profile (:mod:`sweeper.sim.probe`)
``render_plot``       one plot of a step's report (:mod:`sweeper.report`)
===================== ======================================================================

The transport supplies an :class:`Exchange` (how a replica hands a large payload, a prefix-reuse store, to
the others: Ray's object store; nobody in process). Data can reach a replica in the spec or, for data
that should not be held twice, as a loader the replica calls itself (:class:`DataOnWorker`).
"""

from __future__ import annotations

import os
import resource
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from sweeper.quant.profile import Profile

if TYPE_CHECKING:
    from sweeper.eval.early import Outcome
    from sweeper.eval.target import Target


@dataclass(frozen=True)
class DataOnWorker:
    """Evaluation data each worker loads itself (``data.load_on_workers``): the loader spec as the
    experiment gives it, where errors are reported, and whether a user metric reads it as loaded."""

    spec: Any
    where: str
    opaque_ok: bool


@dataclass
class WorkerSpec:
    """Everything a worker needs to build its replica; sent once (Ray object store)."""

    model_bytes: bytes
    stats: Any  # CalibrationStats
    quant_config: Any  # QuantConfig
    metric: Any  # a built-in metric's name or a user metric callable
    higher_is_better: bool
    batch_size: int
    input_names: list[str]
    data: Any  # the evaluation data as loaded (dict of arrays, list of feeds, a user metric's own) or DataOnWorker
    reference: list[Any] | None
    threads: int = 1
    precisions: tuple[str, ...] = ()  # every precision a profile may assign (the sweep's candidates)
    probe_data: dict[str, np.ndarray] | None = None  # a calibration batch for per-layer SQNR probes
    probe_tensors: tuple[str, ...] = ()  # tensors the probes compare with FP32
    reuse_mb: float = 0.0  # cap on memory for prefix reuse (sweeper.sim.reuse); 0: every evaluation is a full run
    sample_feeds: dict[str, np.ndarray] | None = None  # one model run's feeds (warm-up, latency)
    samples: int = 0  # evaluation samples (batched data) or feeds, for the prefix-reuse budget
    output_index: int = 0  # the model output the built-in metrics read
    input_specs: Any = None  # {input: (shape, dtype)}: what a user metric's run() is checked against
    rounding: dict[tuple[str, int], np.ndarray] | None = None  # learned weight integers (EncodingTable.rounding)


@dataclass
class Evaluation:
    """One ``evaluate`` call's answer: the profile (as sent), its metric and time, who computed it (worker
    name, node, peak resident memory in MB) and, once a worker completed a reference's prefix-reuse store,
    the handle others fetch it with."""

    profile: dict[str, str]
    metric: float
    seconds: float
    worker: str
    node: str
    peak_rss_mb: float
    store: Any = None
    samples: int | None = None  # samples evaluated (None: a user metric that reads its data itself)
    total: int | None = None  # samples in the evaluation data
    stopped: bool = False  # stopped early: the profile cannot meet the target (sweeper.eval.early)


class Exchange(Protocol):
    """What the transport offers a replica: publish a payload to other workers, fetch one, where it runs."""

    def share(self, payload: dict[str, Any]) -> Any: ...

    def fetch(self, store: Any) -> dict[str, Any] | None: ...

    def node_id(self) -> str: ...


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def available_mb() -> float | None:
    """The node's available memory (``MemAvailable``), or None where /proc/meminfo does not say."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


REUSE_SHARE = 0.4  # of a worker's share of the node's available memory, at most, for prefix-reuse stores


def reuse_budget_mb(cap_mb: float, threads: int) -> float:
    """Prefix-reuse memory for one worker: the experiment's ``reuse_memory_mb`` at most, and no more than
    :data:`REUSE_SHARE` of the node's available memory divided among the workers that fit on it (one per
    ``threads`` CPUs: how the pool places them), so a node full of workers does not run out of memory."""
    if cap_mb <= 0:
        return 0.0
    avail = available_mb()
    if avail is None:
        return cap_mb
    workers_on_node = max(1, (os.cpu_count() or 1) // max(1, threads))
    return float(max(16.0, min(cap_mb, REUSE_SHARE * avail / workers_on_node)))


class Replica:
    """One QuantSim (one ONNX Runtime session) of the experiment and the evaluator; see the module docstring."""

    def __init__(self, spec: WorkerSpec, name: str = "local", exchange: Exchange | None = None) -> None:
        """``exchange``: the transport's (None: nobody to share prefix-reuse stores with)."""
        import onnx

        from sweeper.eval.metrics import make_evaluator
        from sweeper.model.graph import ModelGraph
        from sweeper.sim.encodings import EncodingTable
        from sweeper.sim.quantsim import QuantSim

        self.name = name
        self.spec = spec
        self.exchange = exchange
        self.graph = ModelGraph(onnx.load_from_string(spec.model_bytes))
        self.table = EncodingTable(self.graph, spec.stats, spec.quant_config)
        for (weight, bits), q in (spec.rounding or {}).items():
            self.table.set_rounding(weight, bits, q)
        self.sim = QuantSim(self.graph, self.table, threads=spec.threads, precisions=spec.precisions)
        self.evaluator = make_evaluator(spec.metric, spec.higher_is_better, spec.batch_size, spec.input_names,
                                        output_index=spec.output_index, specs=spec.input_specs)
        self.data = self._load(spec.data)
        self.reference = spec.reference
        self._probe: Any = None
        self._fp32: Any = None
        self._shared_for: str | None = None
        self.reuse = None
        self.reuse_mb = reuse_budget_mb(spec.reuse_mb, spec.threads)
        if self.reuse_mb > 0:
            from sweeper.sim.reuse import PrefixReuse

            self.reuse = PrefixReuse(self.sim, spec.stats.shapes, max(1, spec.samples), self.reuse_mb)
            self.reuse.build(warmup=self.first_batch())
        self.sim.apply(Profile.uniform([g.name for g in self.graph.groups], self.sim.precisions[-1]))
        self.sim.run(self.first_batch())  # ONNX Runtime's first run sets up its memory: not in a sweep's time
        if spec.probe_data is not None:  # an analysis pool: probes prepared at start-up
            self._layer_probe()

    def _load(self, data: Any) -> Any:
        """The evaluation data: as sent, or loaded here when the experiment loads it on each worker."""
        if not isinstance(data, DataOnWorker):
            return data
        from sweeper.eval.data import load_dataset

        raw, _ = load_dataset(data.spec, data.where, opaque_ok=data.opaque_ok)
        return raw

    def first_batch(self) -> dict[str, np.ndarray]:
        """One model run's feeds (warm-up, latency)."""
        if self.spec.sample_feeds is not None:
            return self.spec.sample_feeds
        return {k: self.data[k][: self.spec.batch_size] for k in self.spec.input_names}

    # -- evaluation ---------------------------------------------------------------------------------
    def evaluate(self, profile_json: dict[str, str], reference_json: dict[str, str] | None = None,
                 store: Any = None, target: Target | None = None) -> Evaluation:
        """The metric of a profile. With a ``reference`` profile (one most profiles of the call share a
        prefix with), later profiles run from the reference's stored activations (sweeper.sim.reuse).
        ``store``: another worker's complete store for that reference, to take instead of computing it.
        ``target``: stop as soon as the profile cannot meet it (sweeper.eval.early; the answer says so)."""
        profile = Profile.from_json(profile_json)
        t0 = time.perf_counter()
        reference = None if reference_json is None else Profile.from_json(reference_json)
        out = self._metric(profile, reference, store, target)
        seconds = time.perf_counter() - t0
        node = self.exchange.node_id() if self.exchange is not None else ""
        return Evaluation(profile_json, float(out.metric), seconds, self.name, node, peak_rss_mb(), self._published(),
                          out.samples, out.total, out.stopped)

    def _metric(self, profile: Profile, reference: Profile | None, store: Any, target: Target | None) -> Outcome:
        reuse = self.reuse
        if reuse is None or reference is None or not reuse.cuts:
            self.sim.apply(profile)
            return self.evaluator.outcome(self.sim.run, self.data, self.reference, target)
        reuse.set_reference(reference)
        if store and self.exchange is not None and not reuse.complete():
            payload = self.exchange.fetch(store)
            if payload is not None and reuse.install(payload):
                reuse.stats["installed"] = reuse.stats.get("installed", 0) + 1
                self._shared_for = reference.key  # taken from another worker: nothing new to publish
        out = self.evaluator.outcome(reuse.run_fn(profile), self.data, self.reference, target)
        reuse.finish_run()  # a stopped run ran only some batches: the cuts it stored stay incomplete
        return out

    def fp32_eval(self) -> tuple[float, float]:
        """(metric, seconds) of the FP32 model evaluated like every profile: this worker, its threads, the
        same data and metric; ``seconds`` is what results files call ``fp32_eval_seconds``."""
        from sweeper.model.session import ort_session

        if self._fp32 is None:
            sess = ort_session(self.graph.model, self.spec.threads)
            names = [o.name for o in sess.get_outputs()]
            self._fp32 = lambda feeds: sess.run(names, dict(feeds))
            self._fp32(self.first_batch())  # warm-up, as the simulation had
        t0 = time.perf_counter()
        metric = float(self.evaluator.evaluate(self._fp32, self.data, self.reference))
        return metric, time.perf_counter() - t0

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
        return None if payload is None or self.exchange is None else self.exchange.share(payload)

    # -- the other calls ----------------------------------------------------------------------------
    def _layer_probe(self) -> Any:
        from sweeper.sim.probe import LayerProbe

        if self._probe is None:
            self._probe = LayerProbe(self.graph, self.table, self.spec.probe_tensors, self.spec.probe_data or {},
                                     threads=self.spec.threads, precisions=self.spec.precisions)
        return self._probe

    def layer_sqnr(self, profile_json: dict[str, str], tensor: str) -> float:
        """SQNR (dB) of ``tensor`` under ``profile`` vs FP32, on the probe (calibration) batch."""
        return self._layer_probe().sqnr(Profile.from_json(profile_json), tensor)

    def render_plot(self, doc: dict[str, Any], name: str) -> bytes | None:
        """Render one plot of a report (idle workers draw the report's plots in parallel)."""
        from sweeper.report import render_plot

        return render_plot(doc, name)

    def peak_rss_mb(self) -> float:
        return peak_rss_mb()

    def pid(self) -> int:
        return os.getpid()


# -- calls a step makes on a pool ---------------------------------------------------------------------------
def _not_started(pool: Any) -> bool:
    return getattr(pool, "pool", "") is None  # a LazyPool whose workers never started


def render_in_background(pool: Any, doc: dict[str, Any], name: str) -> Future[bytes | None]:
    """Render a plot on an idle worker while the caller goes on (here, when the pool never started)."""
    from sweeper.report import render_plot

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sweeper-plot")

    def render() -> bytes | None:
        if _not_started(pool):  # do not start workers just to draw
            return render_plot(doc, name)
        try:
            return next(iter(pool.map_calls("render_plot", [(doc, name)])))[1]
        except Exception:  # noqa: BLE001 - a plot must not cost the results: draw it here instead
            return render_plot(doc, name)

    future = executor.submit(render)
    executor.shutdown(wait=False)
    return future


__all__ = ["DataOnWorker", "Evaluation", "Exchange", "Replica", "WorkerSpec", "available_mb",
           "peak_rss_mb", "render_in_background", "reuse_budget_mb"]
