"""Step 5: quantization-aware training of one profile, exported back to ONNX with its learned encodings.

The step starts from a profile (a uniform precision, an AMP result, or an AIMET encodings file with its
own scales), trains the prepared graph with fake-quantization (:mod:`sweeper.techniques.qat`), writes the
trained float model and the learned encodings, loads both back into a new EncodingTable and QuantSim,
evaluates that simulation with the experiment's metric (the number reported: never the torch model's),
and exports it as QDQ, checking the exported model against the simulation. Nothing goes to the worker
pool: the metric before training is the same in-process QuantSim evaluation of the starting encodings.

``OUTPUT/qat/``: ``results.json``, ``trained.onnx`` (float, trained weights), ``trained.encodings`` (the
learned encodings of that model), ``qat.onnx`` + ``qat.encodings`` (the QDQ export).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from sweeper.errors import SweeperError
from sweeper.export.encodings_io import read_encodings, save_export, validate_encodings
from sweeper.export.qdq import export_qdq
from sweeper.model.graph import ModelGraph
from sweeper.pipeline import Workspace
from sweeper.quant.precision import Precision
from sweeper.quant.profile import Profile
from sweeper.search.step import Step, StepContext, StepOutput
from sweeper.sim.encodings import EncodingTable

ProfileLike = str | Precision | Profile | os.PathLike[str]


@dataclass
class QATReport:
    doc: dict[str, Any]
    output: Path


def resolve_profile(ws: Workspace, source: ProfileLike) -> tuple[Profile, EncodingTable, str]:
    """The starting point: (profile, a fresh EncodingTable holding its encodings, a label for results.json).

    ``source``: a Profile, a precision (``w4a8``: every group), or a JSON file: an AIMET encodings file (its
    scales and offsets, and the profile they imply), an AMP ``results.json`` (its accepted profile) or a
    ``{group: precision}`` assignment."""
    table = EncodingTable(ws.graph, ws.stats, ws.quant_config)
    groups = [g.name for g in ws.graph.groups]
    if isinstance(source, Profile):
        return _checked(source, groups, "--profile"), table, source.label()
    if isinstance(source, Precision):
        return Profile.uniform(groups, source), table, source.name
    text = os.fspath(source)
    if not (text.endswith((".json", ".encodings")) or os.sep in text):
        try:
            prec = Precision.parse(text)
        except ValueError as exc:
            raise SweeperError("--profile", f"{exc}; or a path to an AIMET encodings file or an AMP results.json"
                               ) from None
        return Profile.uniform(groups, prec), table, prec.name
    path = Path(text).expanduser()
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SweeperError("--profile", f"cannot read {path} as JSON ({type(exc).__name__}: {exc})") from None
    if isinstance(doc, dict) and "activation_encodings" in doc:
        try:
            profile = table.load_aimet(validate_encodings(doc, path))
        except ValueError as exc:
            raise SweeperError("--profile", str(exc)) from None
        return profile, table, f"{path.name}: {profile.label()}"
    assignment = doc.get("accepted", {}).get("assignment") if isinstance(doc, dict) and "accepted" in doc else doc
    if not isinstance(assignment, dict):
        raise SweeperError("--profile", f"{path}: expected an AIMET encodings file, an AMP results.json with an "
                                        "accepted profile, or a {group: precision} mapping")
    try:
        profile = Profile.from_json(assignment)
    except ValueError as exc:
        raise SweeperError("--profile", f"{path}: {exc}") from None
    return _checked(profile, groups, "--profile"), table, f"{path.name}: {profile.label()}"


def _checked(profile: Profile, groups: list[str], where: str) -> Profile:
    have = {name for name, _ in profile.assignment}
    missing, extra = sorted(set(groups) - have), sorted(have - set(groups))
    if missing or extra:
        raise SweeperError(where, f"the profile does not fit this model: groups missing {missing[:3]}, unknown "
                                  f"{extra[:3]} (expected a profile made for this experiment's model)")
    return profile


def sim_metric(ws: Workspace, graph: ModelGraph, table: EncodingTable, profile: Profile) -> tuple[float, Any]:
    """The experiment's metric of a QuantSim of ``graph`` with ``table`` under ``profile`` (and the sim)."""
    from sweeper.sim.quantsim import QuantSim

    precs = sorted({p for _, p in profile.assignment}, key=lambda p: p.name)
    sim = QuantSim(graph, table, threads=ws.threads, precisions=precs)
    sim.apply(profile)
    data = ws.eval_set if ws.eval_set is not None else ws.evaluation_data()
    return float(ws.evaluator.evaluate(sim.run, data, ws.reference)), sim


def export_check(ws: Workspace, sim: Any, qdq: onnx.ModelProto) -> dict[str, float]:
    """How closely the exported QDQ model reproduces the simulation on one evaluation batch: the largest
    absolute difference (ONNX Runtime with the simulation's exact settings) and the top-1 agreement of the
    read output under ONNX Runtime's default optimizations (what a deployment runs)."""
    from sweeper.model.session import ort_session, reference_session

    feeds = ws.sample_feeds()
    idx = ws.evaluator.output_index
    ref = sim.run(feeds)[idx]
    exact = reference_session(qdq, ws.threads).run(None, feeds)[idx]
    default = ort_session(qdq, ws.threads).run(None, feeds)[idx]
    agree = float(np.mean(default.argmax(-1) == ref.argmax(-1))) if ref.ndim >= 1 and ref.shape[-1] > 1 else 1.0
    return {"export_max_abs_diff": float(np.max(np.abs(exact - ref))) if ref.size else 0.0,
            "export_top1_agreement": agree}


class QATStep(Step):
    """Step 5 (see the module docstring); ``train_fn`` (``fn(model, data, settings)``) replaces the default
    cross-entropy training; ``data`` overrides the experiment's ``qat.data``."""

    name = "qat"
    export_each = False

    def __init__(self, ws: Workspace, profile: ProfileLike, *, data: Any = None, train_fn: Any = None,
                 epochs: int | None = None, lr: float | None = None, batch_size: int | None = None) -> None:
        try:
            from sweeper.techniques.qat import QATSettings
            from sweeper.techniques.torchsim import OPS, unsupported_ops
        except ImportError:
            raise SweeperError("qat", "quantization-aware training needs PyTorch: pip install torch (CPU)") from None
        bad = unsupported_ops(ws.prepared)
        if bad:  # before anything is evaluated
            raise SweeperError("model", f"quantization-aware training does not support the op(s) {', '.join(bad)} "
                                        f"(supported: {', '.join(sorted(OPS))})")
        self.ws = ws
        spec = ws.exp.qat
        self.settings = QATSettings(**{k: v for k, v in (("epochs", epochs if epochs is not None else spec.epochs),
                                                         ("lr", lr if lr is not None else spec.lr),
                                                         ("batch_size", batch_size or spec.batch_size))})
        self.profile, self.start_table, self.label = resolve_profile(ws, profile)
        self.data_spec = data if data is not None else spec.data
        self.train_spec = train_fn if train_fn is not None else spec.train

    def params(self) -> dict[str, Any]:
        return {"profile": self.label, "epochs": self.settings.epochs, "lr": self.settings.lr,
                "batch_size": self.settings.batch_size, "train": _name_of(self.train_spec) or "default"}

    def propose(self) -> None:
        return None  # nothing for the pool: training and both evaluations run here

    def _training_data(self) -> tuple[Any, Any, str]:
        """(raw, Dataset or None, what it was): ``qat.data``, else the calibration data."""
        from sweeper.eval.data import load_dataset

        if self.data_spec is None:
            return self.ws.cal_data, self.ws.cal_set, "calibration"
        raw, ds = load_dataset(self.data_spec, "qat.data", opaque_ok=self.train_spec is not None)
        return raw, ds, _name_of(self.data_spec) or "given"

    def finish(self, ctx: StepContext) -> StepOutput:
        from sweeper.model.intake import resolve_callable
        from sweeper.techniques import qat

        ws, prof = self.ws, self.profile
        before, _ = sim_metric(ws, ws.graph, self.start_table, prof)
        raw, ds, data_name = self._training_data()
        fn = resolve_callable(self.train_spec, "qat.train") if isinstance(self.train_spec, str) else self.train_spec
        model = qat.QATModel(ws.graph, self.start_table, prof)
        trained = qat.train(model, raw, ds, self.settings, fn, ws.evaluator.output_index, ws.threads)
        files = self._write(ctx, model)
        after, sim, graph, table = self._reload(files)
        qdq = export_qdq(graph, table, prof)
        save_export(qdq, table.to_aimet(prof), ctx.staging / "qat.onnx", ctx.staging / "qat.encodings")
        check = export_check(ws, sim, qdq)
        doc = {"experiment": ws.exp.name, "metric": ws.exp.metric, "fp32_metric": ws.fp32_metric,
               "max_drop": ws.exp.max_drop, "profile": self.label, "assignment": prof.to_json(),
               "metric_before": before, "metric_after": after, "drop_before": ws.drop(before),
               "drop_after": ws.drop(after), "meets_target": ws.meets(after),
               "trained_fp32_metric": self._fp32_metric(files["trained"]),
               "epochs": self.settings.epochs, "lr": self.settings.lr, "batch_size": self.settings.batch_size,
               "train": _name_of(self.train_spec) or "default (cross-entropy)", "data": data_name,
               "losses": trained["losses"], "seconds": trained["seconds"], **check,
               "trained_onnx": ctx.final_path("trained.onnx"), "trained_encodings": ctx.final_path("trained.encodings"),
               "onnx": ctx.final_path("qat.onnx"), "encodings": ctx.final_path("qat.encodings")}
        metrics = {"fp32_metric": ws.fp32_metric, "metric_before": before, "metric_after": after,
                   "qat_seconds": trained["seconds"], **check}
        return StepOutput(doc, metrics, ["trained.onnx", "trained.encodings", "qat.onnx", "qat.encodings"],
                          value=QATReport(doc, ctx.final))

    def _write(self, ctx: StepContext, model: Any) -> dict[str, Path]:
        """The trained float model and its learned encodings, as files (what the reload reads)."""
        from sweeper.techniques.qat import learned_table

        trained = model.trained_onnx()
        graph, table = learned_table(trained, model, self.start_table)
        paths = {"trained": ctx.staging / "trained.onnx", "encodings": ctx.staging / "trained.encodings"}
        save_export(trained, table.to_aimet(self.profile), paths["trained"], paths["encodings"])
        del graph
        return paths

    def _reload(self, files: dict[str, Path]) -> tuple[float, Any, ModelGraph, EncodingTable]:
        """The written files loaded into a new EncodingTable and QuantSim, and its metric."""
        graph = ModelGraph(onnx.load(str(files["trained"])))
        table = EncodingTable(graph, self.ws.stats, self.ws.quant_config)
        table.load_aimet(read_encodings(files["encodings"]))
        metric, sim = sim_metric(self.ws, graph, table, self.profile)
        return metric, sim, graph, table

    def _fp32_metric(self, path: Path) -> float:
        from sweeper.model.session import ort_session

        session = ort_session(onnx.load(str(path)), self.ws.threads)
        data = self.ws.eval_set if self.ws.eval_set is not None else self.ws.evaluation_data()
        return float(self.ws.evaluator.evaluate(lambda f: session.run(None, f), data, self.ws.reference))


def _name_of(spec: Any) -> str | None:
    if spec is None or isinstance(spec, str):
        return spec
    return getattr(spec, "__name__", type(spec).__name__)


def format_qat(doc: dict[str, Any], metric: str) -> str:
    """What ``sweeper qat`` prints."""
    metric = metric.rsplit(":", 1)[-1]
    ok = "meets" if doc["meets_target"] else "does not meet"
    return "\n".join([
        f"\nStep 5 - quantization-aware training: {doc['experiment']} at {doc['profile']} "
        f"({doc['epochs']} epochs, lr {doc['lr']:g}, {doc['seconds']:.1f} s)",
        f"{metric}: FP32 {doc['fp32_metric']:.4f}, before {doc['metric_before']:.4f} (PTQ simulation), "
        f"after {doc['metric_after']:.4f} (simulation of the exported encodings; {ok} the target)",
        f"export = simulation: max |diff| {doc['export_max_abs_diff']:.3g}, top-1 agreement "
        f"{doc['export_top1_agreement']:.4f} under ONNX Runtime's default optimizations",
        f"QDQ model: {doc['onnx']}", f"trained float model + encodings: {doc['trained_onnx']}",
        f"results: {Path(doc['onnx']).parent / 'results.json'}"])


__all__ = ["QATReport", "QATStep", "export_check", "format_qat", "resolve_profile", "sim_metric"]
