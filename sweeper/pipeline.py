"""Workspace: everything a step needs, built once from a validated Experiment.

model -> prepared ModelGraph -> CalibrationStats (one pass) -> EncodingTable; FP32 reference outputs and
metric; the WorkerSpec that workers build their QuantSim from.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from sweeper.cluster.pool import WorkerPool, WorkerSpec, make_pool
from sweeper.config.experiment import Experiment
from sweeper.errors import SweeperError
from sweeper.eval.data import check_data, input_specs_from_onnx, load_data
from sweeper.eval.metrics import make_evaluator, reference_outputs
from sweeper.model.graph import WEIGHT_OPS, ModelGraph
from sweeper.model.intake import load_model, prepare_model
from sweeper.quant import calibration
from sweeper.sim.encodings import EncodingTable, QuantConfig


class Workspace:
    """The prepared model, calibration, encodings, data and FP32 reference of one experiment."""

    def __init__(self, exp: Experiment, threads: int | None = None) -> None:
        self.exp = exp
        self._tmp = tempfile.TemporaryDirectory(prefix="sweeper-")
        self.tmp = Path(self._tmp.name)
        onnx_path = str(exp.model.onnx) if exp.model.onnx else None
        if exp.model.onnx_factory:
            from sweeper.model.intake import resolve_callable

            where = f"{exp.path}: model.onnx"
            try:
                onnx_path = str(resolve_callable(exp.model.onnx_factory, where)())
            except SweeperError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise SweeperError(where, f"{exp.model.onnx_factory}() failed: {type(exc).__name__}: {exc}") from None
        model = load_model(onnx_path, exp.model.torch, self.tmp)
        self.prepared = prepare_model(model)
        specs = input_specs_from_onnx(self.prepared)
        self.evaluator = make_evaluator(exp.metric, exp.higher_is_better, exp.batch_size, list(specs))
        self.cal_data = load_data(exp.data.calibration, f"{exp.path}: data.calibration")
        check_data(self.cal_data, specs, False, f"{exp.path}: data.calibration")
        self.eval_data = load_data(exp.data.evaluation, f"{exp.path}: data.evaluation")
        check_data(self.eval_data, specs, self.evaluator.needs_labels, f"{exp.path}: data.evaluation")
        self.graph = ModelGraph(self.prepared)
        self.threads = threads or exp.threads_per_worker
        weight_outputs = [n.output[0] for n in self.graph.nodes if n.op_type in WEIGHT_OPS]
        weight_inputs = [n.input[0] for n in self.graph.nodes if n.op_type in WEIGHT_OPS]
        self.stats = calibration.collect(
            self.prepared, self.graph.activations, weight_outputs + weight_inputs, self.cal_data,
            self.graph.input_names, batch_size=exp.batch_size, max_samples=exp.calibration.samples,
            threads=self.threads,
        )
        self.graph.compute_macs(self.stats.shapes)
        c = exp.calibration
        self.quant_config = QuantConfig(scheme=c.scheme, percentile=c.percentile, act_symmetric=c.act_symmetric,
                                        weight_symmetric=c.weight_symmetric, per_channel=c.per_channel)
        self.table = EncodingTable(self.graph, self.stats, self.quant_config)
        from sweeper.cost.latency import CostModel, load_target

        self.cost_model = CostModel(self.graph, self.stats.shapes, load_target(exp.cost_target))
        self.fp32_session = self._session(self.prepared)
        run = self.fp32_run
        self.reference = reference_outputs(run, self._inputs(self.eval_data)) if self.evaluator.needs_reference else None
        self.fp32_metric = float(self.evaluator.evaluate(run, self.eval_data, self.reference))
        self.fingerprint = self._fingerprint()

    def _fingerprint(self) -> dict[str, Any]:
        """What a stored metric depends on, by content: the prepared model, the data, the metric (and its
        code, for a user metric), every quantization setting and the sweeper version. Resumed studies are
        keyed by it, so a retrained model or new data at the same path is evaluated afresh."""
        import dataclasses

        from sweeper import __version__

        exp = self.exp
        return {"model": hashlib.sha256(self.prepared.SerializeToString()).hexdigest(),
                "calibration_data": _digest_arrays(self.cal_data), "evaluation_data": _digest_arrays(self.eval_data),
                "metric": exp.metric, "metric_code": _code_digest(self.evaluator.fn),
                "higher_is_better": exp.higher_is_better, "batch_size": exp.batch_size,
                "calibration": dataclasses.asdict(exp.calibration), "sweeper": __version__}

    def model_report(self) -> dict[str, Any]:
        """What intake and the quantization rules did to the model as a whole, for results.json: the opset
        conversion, what stays float (subgraph bodies, shared biases) and masking sentinels."""
        from sweeper.model.intake import opset_report

        return {"opset": opset_report(self.prepared), "left_float": self.graph.left_float(),
                "sentinels": self.stats.sentinel_report()}

    def _inputs(self, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: data[k] for k in self.graph.input_names}

    def _session(self, model: onnx.ModelProto) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])

    def fp32_run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.fp32_session.run(None, feeds)

    def drop(self, metric: float) -> float:
        """How much worse than FP32 (positive = worse), in metric units."""
        return (self.fp32_metric - metric) if self.exp.higher_is_better else (metric - self.fp32_metric)

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
            n = min(self.exp.batch_size, len(next(iter(self.cal_data.values()))))
            probe_data = {k: self.cal_data[k][:n] for k in self.graph.input_names}
            probe_tensors = tuple(dict.fromkeys(probe_tensor(self.graph, g.name) for g in self.graph.groups))
        return WorkerSpec(
            model_bytes=self.prepared.SerializeToString(), stats=self.stats, quant_config=self.quant_config,
            metric=self.exp.metric, higher_is_better=self.exp.higher_is_better, batch_size=self.exp.batch_size,
            input_names=self.graph.input_names, data=self.eval_data, reference=self.reference,
            threads=self.threads, precisions=precisions, probe_data=probe_data, probe_tensors=probe_tensors,
            reuse_mb=float(self.exp.reuse_memory_mb) if reuse else 0.0,
        )

    def pool(self, kind: str | None = None, workers: int | None = None, address: str | None = None,
             extra_precisions: tuple[str, ...] = (), probes: bool = False, reuse: bool = False) -> WorkerPool:
        spec = self.worker_spec(extra_precisions, probes, reuse)
        return make_pool(kind or self.exp.pool, spec, workers or self.exp.workers, address)

    def close(self) -> None:
        self._tmp.cleanup()


def _digest_arrays(data: dict[str, np.ndarray]) -> str:
    """Content hash of a dict of arrays (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for k in sorted(data):
        a = np.ascontiguousarray(data[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes() if a.dtype != object else repr(a.tolist()).encode())
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
