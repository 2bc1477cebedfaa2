"""Workspace: everything a step needs, built once from a validated Experiment.

model -> prepared ModelGraph -> CalibrationStats (one pass) -> EncodingTable; FP32 reference outputs and
metric; the WorkerSpec that workers build their replica (sweeper.replica) from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from sweeper.cluster.pool import WorkerPool, make_pool
from sweeper.config.spec import Experiment
from sweeper.errors import SweeperError
from sweeper.eval.data import Dataset, check_dataset, input_specs_from_onnx, load_dataset
from sweeper.eval.metrics import make_evaluator
from sweeper.eval.target import Target
from sweeper.model.graph import WEIGHT_OPS, ModelGraph
from sweeper.model.intake import load_model, prepare_model
from sweeper.model.session import ort_session
from sweeper.quant import calibration
from sweeper.quant.profile import Profile
from sweeper.replica import DataOnWorker, Replica, WorkerSpec
from sweeper.sim.encodings import EncodingTable, QuantConfig


class Workspace:
    """The prepared model, calibration, encodings, data and FP32 reference of one experiment."""

    def __init__(self, exp: Experiment, threads: int | None = None, reference_of: Workspace | None = None) -> None:
        """``reference_of``: the workspace of the original model when this one holds other float weights of
        it (QAT's trained model): its FP32 metric stays the target's base and its FP32 outputs the metric's
        reference, so a profile of the new weights is judged against the model the user brought."""
        self.exp = exp
        self._tmp = tempfile.TemporaryDirectory(prefix="sweeper-")
        self.tmp = Path(self._tmp.name)
        self.threads = threads or exp.threads_per_worker
        # seconds of each preparation phase on the driver (every step's results.json records them)
        self.prepare_seconds: dict[str, float] = {}
        clock = _PhaseClock(self.prepare_seconds)
        self.prepared = prepare_model(self._load_model())
        clock.lap("model")
        self.specs = input_specs_from_onnx(self.prepared)
        self.graph = ModelGraph(self.prepared)
        self.evaluator = make_evaluator(exp.metric, exp.higher_is_better, exp.batch_size, list(self.specs),
                                        output_index=self._output_index(), specs=self.specs)
        # a metric given as a callable (Python API) goes to the workers as it is; documents name it
        self.metric_spec = exp.metric
        if not isinstance(exp.metric, str):
            self.exp = exp = dataclasses.replace(exp, metric=self.evaluator.metric)
        self._load_data()
        self._note_samples()
        clock.lap("data")
        self._calibrate(clock)
        from sweeper.cost.latency import CostModel, load_target

        batched = self.cal_set.layout == "batched"  # feeds: costs per model run (no batch axis to spread over)
        self.cost_model = CostModel(self.graph, self.stats.shapes, load_target(exp.cost_target),
                                    batch=min(exp.batch_size, self.cal_set.samples) if batched else 1)
        self.fp32_session = ort_session(self.prepared, self.threads)
        run = self.fp32_run
        data = self.eval_set if self.eval_set is not None else self.eval_data
        self.reference = self.evaluator.reference_outputs(run, data) if self.evaluator.needs_reference else None
        self.fp32_metric = float(self.evaluator.evaluate(run, data, self.reference))
        clock.lap("fp32_reference")
        if reference_of is not None:
            self.reference, self.fp32_metric = reference_of.reference, reference_of.fp32_metric
        self.fingerprint = self._fingerprint()
        if exp.data.load_on_workers:  # workers load the evaluation data themselves: hold no copy here
            self.eval_data = DataOnWorker(exp.data.evaluation, f"{exp.path}: data.evaluation",
                                          opaque_ok=not self.evaluator.is_builtin)
            self.eval_set = None
        # profile key -> {"metric", "eval_seconds"}: every profile evaluated in this workspace, whichever step
        # evaluated it (sweeper.search.evaluate.Sweep reads and fills it)
        self.evaluated: dict[str, dict[str, float]] = {}
        if getattr(exp, "rounding", None) is not None:  # AdaRound's learned weights (the experiment's rounding key)
            from sweeper.techniques.adaround.rounding_file import load_rounding

            self.use_rounding(load_rounding(exp.rounding, graph=self.graph), str(exp.rounding))
        clock.total()

    def _load_model(self) -> onnx.ModelProto:
        """The user's model: an ONNX file, a torch factory, or a function (an import path, or a callable
        from the Python API) returning an ONNX path, an ``onnx.ModelProto`` or ``(torch module, example)``."""
        exp = self.exp
        factory = exp.model.onnx_factory
        self.from_torch = exp.model.torch is not None  # a PyTorch model (what QAT trains)
        if factory is None:
            return load_model(str(exp.model.onnx) if exp.model.onnx else None, exp.model.torch, self.tmp)
        from sweeper.model.intake import export_torch, load_onnx_file, resolve_callable

        where = f"{exp.path}: model"
        fn = resolve_callable(factory, where) if isinstance(factory, str) else factory
        try:
            made = fn()
        except SweeperError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise SweeperError(where, f"the model function failed: {type(exc).__name__}: {exc}") from None
        if isinstance(made, onnx.ModelProto):
            return made
        if isinstance(made, tuple) and len(made) == 2 and not isinstance(made[0], str | os.PathLike):
            self.from_torch = True
            return export_torch(lambda: made, self.tmp / "exported.onnx", where)
        return load_onnx_file(str(made), where)

    def _output_index(self) -> int:
        """Which model output the built-in metrics read (``metric_output``; default the first)."""
        name = getattr(self.exp, "metric_output", None)
        if name is None:
            return 0
        outputs = self.graph.output_names
        if name not in outputs:
            raise SweeperError(f"{self.exp.path}: metric_output", f"the model has no output {name!r}: its outputs "
                                                                  f"are {', '.join(outputs)}")
        return outputs.index(name)

    def _load_data(self) -> None:
        """Calibration data (sweeper feeds it: checked now) and evaluation data (checked now unless a user
        metric reads it, which gets it exactly as loaded; what it feeds the model is checked then)."""
        exp, where = self.exp, f"{self.exp.path}: data"
        self.cal_data, cal_set = load_dataset(exp.data.calibration, f"{where}.calibration")
        assert cal_set is not None
        self.cal_set: Dataset = cal_set
        check_dataset(self.cal_set, self.specs, False, f"{where}.calibration")
        self.eval_data, self.eval_set = load_dataset(exp.data.evaluation, f"{where}.evaluation",
                                                     opaque_ok=not self.evaluator.is_builtin)
        if not self.evaluator.is_builtin:
            self.eval_set = None  # the user metric's own data: sweeper never feeds it to the model itself
        else:
            assert self.eval_set is not None
            check_dataset(self.eval_set, self.specs, self.evaluator.needs_labels, f"{where}.evaluation")

    def _calibrate(self, clock: _PhaseClock | None = None) -> None:
        """One pass over the calibration data: statistics of every quantizer, MACs, the encoding table."""
        exp, graph = self.exp, self.graph
        weight_outputs = [n.output[0] for n in graph.nodes if n.op_type in WEIGHT_OPS]
        weight_inputs = [n.input[0] for n in graph.nodes if n.op_type in WEIGHT_OPS]
        histograms = exp.calibration.scheme != "minmax"  # min-max encodings read the ranges only
        from sweeper.quant.keep_float import zero_read_activations

        zero_read = zero_read_activations(graph.activations, graph.consumers)
        self.stats = calibration.collect(
            self.prepared, graph.activations, weight_outputs + weight_inputs, self.cal_set, graph.input_names,
            batch_size=exp.batch_size, max_samples=exp.calibration.samples, threads=self.threads,
            histograms=histograms, fp16_flush=zero_read,  # float16 underflow is reported only there
        )
        graph.compute_macs(self.stats.shapes, batched=self.cal_set.layout == "batched")
        if clock:
            clock.lap("calibration")
        c = exp.calibration
        self.quant_config = QuantConfig(scheme=c.scheme, percentile=c.percentile, act_symmetric=c.act_symmetric,
                                        weight_symmetric=c.weight_symmetric, per_channel=c.per_channel,
                                        bias=c.bias)
        self.table = EncodingTable(graph, self.stats, self.quant_config)
        # AIMET calibrates activations with the weights already quantized (issue 8 item 7): one pass per
        # integer weight bit width among the candidates and the analysis precisions (8 and 16)
        from sweeper.quant.weight_aware import collect_weight_aware

        bits = {p.weight_bits for p in exp.candidates if not p.is_float} | {8, 16}
        self.stats.by_weight_bits = collect_weight_aware(
            graph, self.table.weight, bits, self.cal_set, batch_size=exp.batch_size,
            max_samples=exp.calibration.samples, threads=self.threads, histograms=histograms,
            whole=[t for t, st in self.stats.tensors.items() if st.sentinels])
        if clock:
            clock.lap("weight_aware_calibration")
        self._check_encodings()
        if clock:
            clock.lap("encodings")

    def _check_encodings(self) -> None:
        """Every candidate's encodings are finite now, while preparing (seconds), not when a step writes them
        after minutes of evaluation: a model that cannot be quantized fails here with one line."""
        from sweeper.export.encodings_io import non_finite_values, validate_encodings

        groups = [g.name for g in self.graph.groups]
        for prec in self.exp.candidates:
            doc = self.table.to_aimet(Profile.uniform(groups, prec))
            bad = non_finite_values(doc)
            if not bad:
                try:  # the rule the exporter applies: every scale finite and positive, offsets on the grid...
                    validate_encodings(doc, f"{self.exp.name} at {prec.name}")
                except ValueError as exc:
                    raise SweeperError("model", str(exc)) from None
            if bad:
                more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
                raise SweeperError("model", f"{self.exp.name} at {prec.name}: encoding {bad[0]}{more}: expected "
                                            "finite scales and values (calibration statistics, weights, biases)")

    def evaluation_data(self) -> Any:
        """The evaluation data as the loader returned it (loaded again when only the workers hold it)."""
        if isinstance(self.eval_data, DataOnWorker):
            return load_dataset(self.eval_data.spec, self.eval_data.where, self.eval_data.opaque_ok)[0]
        return self.eval_data

    def _note_samples(self) -> None:
        """One model run's feeds (warm-up, latency measurement: the first evaluation batch or feed, or the
        calibration data's when only a user metric reads the evaluation data), how many samples they hold
        (a batch of batched data, else 1), and the evaluation's samples or feeds (prefix-reuse budget)."""
        ds = self.eval_set if self.eval_set is not None else self.cal_set
        self._sample = ds.first(self.graph.input_names, self.exp.batch_size)
        self._sample_size = min(self.exp.batch_size, ds.samples) if ds.layout == "batched" else 1
        self._samples = ds.samples

    def sample_size(self) -> int:
        """Samples in :meth:`sample_feeds`."""
        return self._sample_size

    def sample_feeds(self, max_samples: int | None = None) -> dict[str, np.ndarray]:
        """One model run's feeds (see :meth:`_note_samples`); batched data cut to ``max_samples`` samples."""
        if max_samples is None or self._sample_size <= max_samples:
            return self._sample
        return {k: v[:max_samples] if np.ndim(v) else v for k, v in self._sample.items()}

    def _fingerprint(self) -> dict[str, Any]:
        """What a stored metric depends on, by content: the prepared model, the data, the metric (and its
        code, for a user metric), every quantization setting and the sweeper version. Resumed studies are
        keyed by it, so a retrained model or new data at the same path is evaluated afresh."""
        from sweeper.version import __version__

        exp = self.exp
        return {"model": hashlib.sha256(self.prepared.SerializeToString()).hexdigest(),
                "calibration_data": _digest(self.cal_data), "evaluation_data": _digest(self.eval_data),
                "metric": exp.metric, "metric_code": _code_digest(self.evaluator.fn),
                "higher_is_better": exp.higher_is_better, "batch_size": exp.batch_size,
                "calibration": dataclasses.asdict(exp.calibration), "sweeper": __version__}

    def use_rounding(self, rounding: dict[tuple[str, int], np.ndarray], source: str = "") -> None:
        """Store weights with learned integers (AdaRound) instead of round-to-nearest, in the simulation, on
        every worker built afterwards and in exports. Keyed by (weight, bits); the encodings stay. The
        fingerprint changes with them, so no stored metric of the nearest-rounded weights is reused."""
        for (name, bits), q in rounding.items():
            self.table.set_rounding(name, bits, q)
        self.fingerprint["rounding"] = _digest({f"{n}@{b}": q for (n, b), q in sorted(self.table.rounding.items())})
        self.fingerprint["rounding_source"] = source
        self.evaluated.clear()

    def model_report(self) -> dict[str, Any]:
        """What intake and the quantization rules did to the model as a whole, for results.json: the opset
        conversion, what stays float (subgraph bodies, shared biases) and masking sentinels."""
        from sweeper.model.intake import opset_report

        return {"opset": opset_report(self.prepared), "left_float": self.graph.left_float() + self.table.kept_float(),
                "sentinels": self.stats.sentinel_report()}

    def fp32_run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.fp32_session.run(None, feeds)

    @property
    def target(self) -> Target:
        """The accuracy target of this experiment (FP32 metric, max drop, direction)."""
        return Target(self.fp32_metric, self.exp.max_drop, self.exp.higher_is_better)

    def drop(self, metric: float) -> float:
        """How much worse than FP32 (positive = worse), in metric units."""
        return self.target.drop(metric)

    def meets(self, metric: float) -> bool:
        """Whether ``metric`` meets the target (the one rule every step uses)."""
        return self.target.meets(metric)

    def worker_spec(self, extra_precisions: tuple[str, ...] = (), probes: bool = False,
                    reuse: bool = False) -> WorkerSpec:
        """What workers build their QuantSim from; ``extra_precisions`` beyond the candidates (analysis,
        LiteMP's higher precision); ``probes`` adds a calibration batch and per-group probe tensors;
        ``reuse`` prepares prefix reuse (``reuse_memory_mb``) for steps whose profiles share prefixes."""
        from sweeper.sim.quantsim import probe_tensor

        precisions = tuple(dict.fromkeys([*(p.name for p in self.exp.candidates), *extra_precisions]))
        probe_data = None
        probe_tensors: tuple[str, ...] = ()
        if probes:
            probe_data = self.cal_set.first(self.graph.input_names, self.exp.batch_size)
            probe_tensors = tuple(dict.fromkeys(probe_tensor(self.graph, g.name) for g in self.graph.groups))
        return WorkerSpec(
            model_bytes=self.prepared.SerializeToString(), stats=self.stats, quant_config=self.quant_config,
            metric=self.metric_spec, higher_is_better=self.exp.higher_is_better, batch_size=self.exp.batch_size,
            input_names=self.graph.input_names, data=self.eval_data, reference=self.reference,
            threads=self.threads, precisions=precisions, probe_data=probe_data, probe_tensors=probe_tensors,
            reuse_mb=float(self.exp.reuse_memory_mb) if reuse else 0.0, sample_feeds=self.sample_feeds(),
            samples=self._samples, output_index=self.evaluator.output_index,
            input_specs=self.specs, rounding=dict(self.table.rounding),
        )

    def pool(self, kind: str | None = None, workers: int | None = None, address: str | None = None,
             extra_precisions: tuple[str, ...] = (), probes: bool = False, reuse: bool = False) -> WorkerPool:
        spec = self.worker_spec(extra_precisions, probes, reuse)
        return make_pool(kind or self.exp.pool, Replica, spec, workers or self.exp.workers, address)

    def close(self) -> None:
        self._tmp.cleanup()


class _PhaseClock:
    """Seconds per named phase, written into ``into`` as each phase ends (``total`` adds their sum, ``cpu`` the
    driver process's CPU seconds over all of them: with Ray starting beside the preparation on a small machine,
    the wall time also holds the time Ray's processes took the cores, the CPU time only the preparation's work)."""

    def __init__(self, into: dict[str, float]) -> None:
        self.into, self.t, self.cpu = into, time.perf_counter(), time.process_time()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.into[phase] = round(self.into.get(phase, 0.0) + now - self.t, 3)
        self.t = now

    def total(self) -> None:
        self.lap("other")
        self.into["total"] = round(sum(v for k, v in self.into.items() if k not in ("total", "cpu")), 3)
        self.into["cpu"] = round(time.process_time() - self.cpu, 3)


def _digest(data: Any) -> str:
    """Content hash of data as a loader returned it: arrays (dtype, shape, bytes), mappings, sequences and
    scalars; anything else by its pickle, or a fresh value (never resumed) when it has none."""
    h = hashlib.sha256()

    def feed(x: Any) -> None:
        if isinstance(x, np.ndarray | np.generic):
            a = np.ascontiguousarray(x)
            h.update(f"a|{a.dtype.str}|{a.shape}|".encode())
            h.update(a.tobytes() if a.dtype != object else repr(a.tolist()).encode())
        elif isinstance(x, dict):
            h.update(b"d|")
            for k in sorted(x, key=str):
                h.update(f"{k}=".encode())
                feed(x[k])
        elif isinstance(x, list | tuple):
            h.update(f"l{len(x)}|".encode())
            for v in x:
                feed(v)
        elif isinstance(x, str | bytes | int | float | bool) or x is None:
            h.update(repr(x).encode())
        else:
            import pickle

            try:
                h.update(pickle.dumps(x))
            except Exception:  # noqa: BLE001 - unpicklable: never treat two runs as the same data
                h.update(uuid.uuid4().bytes)

    feed(data)
    return h.hexdigest()


def _code_digest(fn: Any) -> str | None:
    """Hash of the source file a user metric lives in (None for built-ins or when it has no file)."""
    import inspect

    if fn is None:
        return None
    try:
        return hashlib.sha256(Path(inspect.getfile(fn)).read_bytes()).hexdigest()
    except (TypeError, OSError):
        return None


class StagedOutput:
    """A step's output folder written in a staging folder and moved into place at the end, so a failure
    leaves nothing half-written."""

    def __init__(self, root: Path, step: str) -> None:
        self.final = root / step
        self._created_root = not root.exists()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SweeperError(str(root), f"cannot create the output directory ({exc.strerror})") from None
        if not os.access(root, os.W_OK):
            raise SweeperError(str(root), "output directory is not writable")
        self.path = root / f".{step}.staging-{uuid.uuid4().hex[:8]}"
        self.path.mkdir()

    def commit(self) -> Path:
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}.old-{uuid.uuid4().hex[:8]}")
            self.final.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        self.path.rename(self.final)
        return self.final

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self._created_root:
            try:
                self.final.parent.rmdir()
            except OSError:
                pass
