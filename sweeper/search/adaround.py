"""Step 4: AdaRound. Learned weight rounding at one uniform precision, kept only when it evaluates better.

AdaRound reconstructs each layer's FP32 output, not the metric, so it can make an already good precision
worse (AIMET's does on the MNIST example at w4a8). The step therefore evaluates both with the experiment's
metric, fully:

* the nearest-rounded weights as every step evaluates a profile: proposed as a :class:`Batch`, run on the
  session's pool, exported, logged as an MLflow child run and stored in the step's study (a rerun resumes it);
* the AdaRounded weights on a second pool, in process, built from the same
  :class:`~sweeper.replica.WorkerSpec` with the learned integers added (``WorkerSpec.rounding``): the same
  worker code (simulation, metric, data) as the first, so the two metrics differ by the weights alone. The
  session's pool cannot evaluate them (its workers hold the nearest weights as constants of their
  simulation, and the profile is the same as nearest's, so the study would take it for done), and the
  workspace is left as it is: the learned rounding reaches later steps only through the ``rounding`` key of
  the experiment (or :meth:`~sweeper.pipeline.Workspace.use_rounding`).

``OUTPUT/adaround/``: ``results.json`` (metrics before and after, which was kept, per-layer reconstruction
errors), ``rounding.npz`` (the learned integers, :func:`load_rounding`), the QDQ models and encodings of
both (``nearest.*`` and ``adaround.*``; ``onnx``/``encodings`` in results.json name the kept one's).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from sweeper.errors import SweeperError
from sweeper.pipeline import Workspace
from sweeper.quant.precision import Precision
from sweeper.quant.profile import Profile
from sweeper.search.evaluate import Evaluated
from sweeper.search.step import Batch, PoolNeeds, Step, StepContext, StepOutput
from sweeper.techniques.adaround.driver import AdaRoundResult, adaround, working_table
from sweeper.techniques.adaround.optimize import AdaRoundConfig
from sweeper.techniques.adaround.rounding_file import ROUNDING_FILE, load_rounding, save_rounding


class AdaRoundStep(Step):
    """Step 4 (see the module docstring): nearest on the pool, AdaRound, the AdaRounded weights in process."""

    name = "adaround"

    def __init__(self, ws: Workspace, precision: Precision, config: AdaRoundConfig | None = None) -> None:
        if precision.is_float or precision.weights_float:
            raise SweeperError("--precision", f"found {precision.name}: AdaRound needs integer weights, e.g. w4a8")
        already = sorted(w for w, b in ws.table.rounding if b == precision.weight_bits)
        if already:
            raise SweeperError("adaround", f"the workspace already stores {len(already)} weights with learned "
                                           f"{precision.weight_bits}-bit rounding (the experiment's rounding key): "
                                           "AdaRound starts from rounding to nearest, run it without that key")
        self.ws, self.precision = ws, precision
        self.config = config or AdaRoundConfig()
        self.profile = Profile.uniform([g.name for g in ws.graph.groups], precision)
        self.nearest: Evaluated | None = None
        self._asked = False

    def params(self) -> dict[str, Any]:
        c = self.config
        return {"precision": self.precision.name, "iterations": c.iterations, "adaround_batch_size": c.batch_size,
                "reg": c.reg, "beta": f"{c.beta[0]:g}-{c.beta[1]:g}", "warm_start": c.warm_start, "lr": c.lr}

    def pool_needs(self) -> PoolNeeds:
        return PoolNeeds(extra_precisions=(self.precision.name,))

    def propose(self) -> Batch | None:
        if self._asked:
            return None
        self._asked = True
        return Batch({"nearest": self.profile})

    def observe(self, results: dict[str, Evaluated], profiles: dict[str, Profile]) -> None:
        self.nearest = results["nearest"]

    def _evaluate_learned(self, rounding: dict[tuple[str, int], np.ndarray]) -> tuple[float, float]:
        """(metric, seconds) of the profile with the learned integers, on a one-worker in-process pool."""
        from sweeper.cluster.pool import make_pool
        from sweeper.replica import Replica

        ws = self.ws
        spec = dataclasses.replace(ws.worker_spec(extra_precisions=(self.precision.name,)),
                                   precisions=(self.precision.name,), rounding={**ws.table.rounding, **rounding})
        pool = make_pool("local", Replica, spec, 1)
        try:
            res = next(iter(pool.map_unordered([self.profile])))
        finally:
            pool.close()
        return float(res.metric), float(res.eval_seconds)

    def _export_learned(self, ctx: StepContext, rounding: dict[tuple[str, int], np.ndarray]) -> tuple[str, str]:
        """QDQ model and AIMET encodings of the profile with the learned integers (``adaround.*``)."""
        from sweeper.export.encodings_io import save_export
        from sweeper.export.qdq import export_qdq

        ws = self.ws
        work = working_table(ws.table, self.precision.weight_bits)
        for (name, bits), q in rounding.items():
            work.set_rounding(name, bits, q)
        onnx_path, enc_path = ctx.staging / "adaround.onnx", ctx.staging / "adaround.encodings"
        save_export(export_qdq(ws.graph, work, self.profile), work.to_aimet(self.profile), onnx_path, enc_path)
        return str(onnx_path), str(enc_path)

    def finish(self, ctx: StepContext) -> StepOutput:
        """AdaRound, the learned weights evaluated and exported, the better one kept (never below nearest)."""
        ws, exp, near = self.ws, self.ws.exp, self.nearest
        assert near is not None
        t0 = time.perf_counter()
        res = adaround(ws.graph, ws.table, self.precision, ws.cal_set, self.config, threads=ws.threads,
                       batch_size=exp.batch_size, max_samples=exp.calibration.samples, workdir=ws.tmp)
        after, after_s = self._evaluate_learned(res.rounding)
        better = after > near.metric if exp.higher_is_better else after < near.metric
        kept = "adaround" if better and res.rounding else "nearest"
        onnx_path, enc_path = self._export_learned(ctx, res.rounding)
        save_rounding(ctx.staging / ROUNDING_FILE, res.rounding, kept, self.precision.name)
        metric = after if kept == "adaround" else near.metric
        doc = self._doc(ctx, res, after, after_s, kept, metric, (onnx_path, enc_path), time.perf_counter() - t0)
        metrics = {"metric_before": near.metric, "metric_after": after, "metric_kept": metric,
                   "kept_adaround": float(kept == "adaround"), "adaround_seconds": res.seconds,
                   "fp32_metric": ws.fp32_metric}
        return StepOutput(doc, metrics, artifacts=[ROUNDING_FILE, "adaround.onnx", "adaround.encodings"])

    def _doc(self, ctx: StepContext, res: AdaRoundResult, after: float, after_s: float, kept: str, metric: float,
             learned: tuple[str, str], seconds: float) -> dict[str, Any]:
        """results.json."""
        ws, near = self.ws, self.nearest
        assert near is not None
        exports = {"nearest": {"onnx": near.onnx, "encodings": near.encodings},
                   "adaround": {"onnx": learned[0], "encodings": learned[1]}}
        c = self.config
        return {
            "experiment": ws.exp.name, "metric": ws.exp.metric, "fp32_metric": ws.fp32_metric,
            "max_drop": ws.exp.max_drop, "precision": self.precision.name,
            "metric_before": near.metric, "metric_after": after, "kept": kept, "metric_kept": metric,
            "drop": ws.drop(metric), "meets_target": ws.meets(metric), "bops_ratio": near.bops_ratio,
            "size_mb": near.size_mb, "est_latency_ms": near.est_latency_ms,
            "iterations": c.iterations, "seconds": round(res.seconds, 3), "step_seconds": round(seconds, 3),
            "eval_seconds": {"nearest": near.eval_seconds, "adaround": after_s},
            "onnx": exports[kept]["onnx"], "encodings": exports[kept]["encodings"], "exports": exports,
            "rounding": str(ctx.staging / ROUNDING_FILE),
            "settings": {"batch_size": c.batch_size, "reg": c.reg, "beta": list(c.beta), "warm_start": c.warm_start,
                         "lr": c.lr, "calibration_samples": ws.cal_set.samples
                         if ws.exp.calibration.samples is None else min(ws.exp.calibration.samples,
                                                                        ws.cal_set.samples)},
            "layers": res.to_json()["layers"], "skipped": res.skipped,
            "nearest_resumed": near.resumed,
        }


def format_adaround(doc: dict[str, Any]) -> str:
    """What the CLI prints: both metrics, which was kept, the per-layer reconstruction errors."""
    lines = [f"{'layer':<40} {'op':<14} {'act':<6} {'err nearest':>12} {'err adaround':>13} {'changed':>8}  kept"]
    for r in doc["layers"]:
        lines.append(f"{r['op'][-40:]:<40} {r['op_type']:<14} {r['activation'] or '-':<6} {r['mse_nearest']:>12.5g} "
                     f"{r['mse_adaround']:>13.5g} {r['changed']:>8}  {r['kept']}")
    for s in doc["skipped"]:
        lines.append(f"{s['op'][-40:]:<40} skipped: {s['reason']}")
    lines.append(f"\n{doc['precision']}: nearest {doc['metric_before']:.4f}, AdaRound {doc['metric_after']:.4f} "
                 f"(FP32 {doc['fp32_metric']:.4f}, {doc['iterations']} iterations, {doc['seconds']:.1f} s)")
    verdict = ("AdaRound kept" if doc["kept"] == "adaround"
               else "nearest kept (AdaRound did not evaluate better)")
    lines.append(f"{verdict}: {doc['metric_kept']:.4f}, {'meets' if doc['meets_target'] else 'misses'} the target")
    return "\n".join(lines)


__all__ = ["AdaRoundStep", "format_adaround", "load_rounding", "save_rounding"]
