"""The shared evaluation/logging path every strategy uses.

A :class:`Sweep` evaluates profiles on the worker pool, costs them (BOPs, size, estimated latency),
exports them (QDQ ONNX + encodings), logs one MLflow child run each and records each as a completed trial
of the step's Optuna study. Export and logging run on a background thread so workers never wait for them.
A rerun of an interrupted sweep takes completed profiles from the study (not evaluated again) and
MLflow child runs are keyed by profile hash (not logged twice).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sweeper.cluster.pool import Result, WorkerPool
from sweeper.cost.bops import profile_cost
from sweeper.export.encodings_io import save_export
from sweeper.export.qdq import export_qdq
from sweeper.pipeline import Workspace
from sweeper.quant.profile import Profile
from sweeper.search.study import SweepStudy, study_name
from sweeper.tracking.tracker import Tracker


@dataclass
class Evaluated:
    name: str
    profile_key: str
    metric: float
    drop: float
    meets_target: bool
    bops_ratio: float
    size_mb: float
    est_latency_ms: float
    eval_seconds: float
    onnx: str | None = None
    encodings: str | None = None
    resumed: bool = False

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def progress(total: int, desc: str, initial: int = 0):  # noqa: ANN201 - tqdm, silent when not a TTY
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="profile", disable=not sys.stderr.isatty(),
                leave=False)


def default_storage(ws: Workspace) -> str:
    configured = ws.exp.study_storage or os.environ.get("SWEEPER_STUDY_STORAGE")
    if configured:
        return configured
    ws.exp.output.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{ws.exp.output / 'study.db'}"


class Sweep:
    """One step's sweep (see the module docstring)."""

    def __init__(self, ws: Workspace, step: str, strategy: str, out_dir: Path, tracker: Tracker | None,
                 params: dict[str, Any] | None = None, fresh: bool = False, export: bool = True) -> None:
        self.ws = ws
        self.step = step
        self.strategy = strategy
        self.out_dir = out_dir
        self.tracker = tracker
        self.export = export
        exp = ws.exp
        fingerprint = {"model": str(exp.model), "data": str(exp.data), "metric": exp.metric,
                       "calibration": str(exp.calibration), "batch_size": exp.batch_size}
        groups = [g.name for g in ws.graph.groups]
        self.study = SweepStudy(default_storage(ws), study_name(exp.name, step, fingerprint), groups,
                                list(exp.candidates), fresh=fresh)
        self.done = self.study.completed()
        if tracker is not None:
            base = {"step": step, "strategy": strategy, "calibration_scheme": exp.calibration.scheme,
                    "candidates": ",".join(p.name for p in exp.candidates), "max_drop": exp.max_drop,
                    "groups": len(groups), "cost_target": exp.cost_target, "study": self.study.name}
            parent = tracker.start_step(step, {**base, **(params or {})}, resume_run_id=self.study.parent_run_id)
            if parent != self.study.parent_run_id:
                self.study.set_parent_run_id(parent)
        self.results: dict[str, Evaluated] = {}

    # -- one profile ------------------------------------------------------------------------------
    def _evaluated(self, name: str, profile: Profile, metric: float, seconds: float, resumed: bool) -> Evaluated:
        ws = self.ws
        cost = profile_cost(ws.graph, profile)
        drop = ws.drop(metric)
        return Evaluated(name=name, profile_key=profile.key, metric=metric, drop=drop,
                         meets_target=drop <= ws.exp.max_drop, bops_ratio=cost.bops_ratio, size_mb=cost.size_mb,
                         est_latency_ms=ws.cost_model.latency_ms(profile), eval_seconds=seconds, resumed=resumed)

    def _finish(self, ev: Evaluated, profile: Profile, res: Result | None) -> Evaluated:
        """Export, log and record one profile (background thread)."""
        ws = self.ws
        onnx_path, enc_path = self.out_dir / f"{ev.name}.onnx", self.out_dir / f"{ev.name}.encodings"
        if self.export:
            model = export_qdq(ws.graph, ws.table, profile)
            save_export(model, ws.table.to_aimet(profile), onnx_path, enc_path)
            ev.onnx, ev.encodings = str(onnx_path), str(enc_path)
        if res is None:  # resumed: logged and recorded by the run that evaluated it
            return ev
        run_id = ""
        if self.tracker is not None:
            keep = ws.exp.tracking_artifacts == "all" or ev.meets_target
            run_id = self.tracker.log_profile(
                ev.name,
                params={"step": self.step, "strategy": self.strategy, "profile": profile.label(),
                        "calibration_scheme": ws.exp.calibration.scheme,
                        **{f"groups_{k}": v for k, v in profile.counts().items()}},
                metrics={"metric": ev.metric, "drop": ev.drop, "bops_ratio": ev.bops_ratio,
                         "est_latency_ms": ev.est_latency_ms, "size_mb": ev.size_mb, "eval_seconds": ev.eval_seconds},
                tags={"sweeper.profile_hash": profile.key, "sweeper.strategy": self.strategy,
                      "sweeper.worker": res.worker, "sweeper.node": res.node},
                artifacts={"onnx": onnx_path, "encodings": enc_path} if keep and self.export else None,
                assignment=profile.to_json(),
            )
        self.study.record(profile, ev.metric, {"name": ev.name, "metric": ev.metric, "eval_seconds": ev.eval_seconds,
                                               "worker": res.worker, "node": res.node, "mlflow_run_id": run_id})
        return ev

    # -- many profiles ----------------------------------------------------------------------------
    def evaluate(self, pool: WorkerPool, profiles: dict[str, Profile]) -> dict[str, Evaluated]:
        """Evaluate named profiles (those the study already has are taken from it)."""
        by_key = {p.key: name for name, p in profiles.items()}
        todo = [p for p in profiles.values() if p.key not in self.done]
        futures: list[Future[Evaluated]] = []
        bar = progress(len(profiles), self.step, initial=len(profiles) - len(todo))
        best: float | None = None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sweeper-log") as logger:
            try:
                for name, p in profiles.items():
                    if p.key in self.done:
                        rec = self.done[p.key]
                        ev = self._evaluated(name, p, float(rec["metric"]), float(rec["eval_seconds"]), True)
                        futures.append(logger.submit(self._finish, ev, p, None))
                for res in self._results(pool, todo):
                    name = by_key[res.profile.key]
                    ev = self._evaluated(name, res.profile, res.metric, res.eval_seconds, False)
                    futures.append(logger.submit(self._finish, ev, res.profile, res))
                    best = ev.metric if best is None else max(best, ev.metric)
                    bar.set_postfix(best=f"{best:.4f}")
                    bar.update(1)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
            finally:
                bar.close()
            for f in futures:
                ev = f.result()
                self.results[ev.name] = ev
        return dict(self.results)

    @staticmethod
    def _results(pool: WorkerPool, todo: list[Profile]) -> Iterator[Result]:
        if todo:
            yield from pool.map_unordered(todo)

    def finish(self, metrics: dict[str, float] | None = None, artifacts: list[Path] | None = None) -> None:
        if self.tracker is not None:
            self.tracker.end_step(metrics, artifacts)


def write_json(path: Path, doc: object) -> None:
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")


__all__ = ["Evaluated", "Sweep", "progress", "write_json"]
