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
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sweeper.cluster.pool import WorkerPool
from sweeper.cluster.protocol import Result, result_from
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
    bias_rescaled: int = 0  # layers whose int32 bias scale was enlarged (details in the encodings file)
    fp16_saturated: int = 0  # tensors that saturate at +-65504 in float16 (details in the encodings file)
    fp16_underflow: int = 0  # tensors whose values float16 flushes to zero where a zero breaks their reader
    onnx: str | None = None
    encodings: str | None = None
    resumed: bool = False
    samples_evaluated: int | None = None  # samples the metric is over (None: a user metric reading its data)
    stopped_early: bool = False  # it cannot meet the target: evaluated on ``samples_evaluated`` only

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
        groups = [g.name for g in ws.graph.groups]
        self.study = SweepStudy(default_storage(ws), study_name(exp.name, step, ws.fingerprint), fresh=fresh)
        own = self.study.completed()
        ws.evaluated.update(own)
        # profiles an earlier step of this workflow evaluated are taken from it (one evaluation per profile
        # per workflow); they are this step's results but stay logged under the step that evaluated them
        self.done = {**ws.evaluated, **own}
        if tracker is not None:
            base = {"step": step, "strategy": strategy, "calibration_scheme": exp.calibration.scheme,
                    "candidates": ",".join(p.name for p in exp.candidates), "max_drop": exp.max_drop,
                    "groups": len(groups), "cost_target": exp.cost_target, "study": self.study.name}
            parent = tracker.start_step(step, {**base, **(params or {})}, resume_run_id=self.study.parent_run_id)
            if parent != self.study.parent_run_id:
                self.study.set_parent_run_id(parent)
        self.results: dict[str, Evaluated] = {}
        self.peak_rss_mb: dict[str, float] = {}  # worker -> peak resident memory (MB) seen in its answers
        self._logger = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sweeper-log")
        self._futures: list[Future[Evaluated]] = []

    # -- one profile ------------------------------------------------------------------------------
    def _evaluated(self, name: str, profile: Profile, rec: dict[str, Any], resumed: bool) -> Evaluated:
        """The figures of one profile from its record (``metric``, ``eval_seconds``, and when known
        ``samples_evaluated`` and ``stopped_early``). A stopped profile never meets the target."""
        ws = self.ws
        metric = float(rec["metric"])
        stopped = bool(rec.get("stopped_early", False))
        cost = profile_cost(ws.graph, profile)
        adj = ws.table.adjustments(profile)
        return Evaluated(name=name, profile_key=profile.key, metric=metric, drop=ws.drop(metric),
                         meets_target=ws.meets(metric) and not stopped, bops_ratio=cost.bops_ratio,
                         size_mb=cost.size_mb, est_latency_ms=ws.cost_model.latency_ms(profile),
                         eval_seconds=float(rec["eval_seconds"]), bias_rescaled=len(adj["bias_rescaled"]),
                         fp16_saturated=len(adj["fp16_saturated"]), fp16_underflow=len(adj["fp16_underflow"]),
                         resumed=resumed, samples_evaluated=rec.get("samples_evaluated"), stopped_early=stopped)

    def _finish(self, ev: Evaluated, profile: Profile, res: Result | None) -> Evaluated:
        """Export, log and record one profile (on the background thread)."""
        ws = self.ws
        onnx_path, enc_path = self.out_dir / f"{ev.name}.onnx", self.out_dir / f"{ev.name}.encodings"
        if self.export:
            try:
                model = export_qdq(ws.graph, ws.table, profile)
                save_export(model, ws.table.to_aimet(profile), onnx_path, enc_path)
            except BaseException:
                if res is not None:  # the evaluation is kept: a rerun resumes it instead of evaluating again
                    self._record(ev, profile, res, "")
                raise
        if res is None:  # resumed: logged and recorded by the run that evaluated it
            return ev
        run_id = ""
        if self.tracker is not None:
            keep = self.logs_exports(ev.metric)
            run_id = self.tracker.log_profile(
                ev.name,
                params={"step": self.step, "strategy": self.strategy, "profile": profile.label(),
                        "calibration_scheme": ws.exp.calibration.scheme,
                        **{f"groups_{k}": v for k, v in profile.counts().items()}},
                metrics={"metric": ev.metric, "drop": ev.drop, "bops_ratio": ev.bops_ratio,
                         "est_latency_ms": ev.est_latency_ms, "size_mb": ev.size_mb, "eval_seconds": ev.eval_seconds,
                         **({} if ev.samples_evaluated is None else {"samples_evaluated": ev.samples_evaluated})},
                tags={"sweeper.profile_hash": profile.key, "sweeper.strategy": self.strategy,
                      "sweeper.worker": res.worker, "sweeper.node": res.node,
                      "sweeper.stopped_early": str(ev.stopped_early).lower()},
                artifacts={"onnx": onnx_path, "encodings": enc_path} if keep and self.export else None,
                assignment=profile.to_json(),
            )
        self._record(ev, profile, res, run_id)
        return ev

    def _record(self, ev: Evaluated, profile: Profile, res: Result, run_id: str) -> None:
        self.study.record(profile, ev.metric, {"name": ev.name, "metric": ev.metric, "eval_seconds": ev.eval_seconds,
                                               "samples_evaluated": ev.samples_evaluated,
                                               "worker": res.worker, "node": res.node, "mlflow_run_id": run_id},
                          stopped_at=(ev.samples_evaluated or 0) if ev.stopped_early else None)

    def _submit(self, ev: Evaluated, profile: Profile, res: Result | None) -> Evaluated:
        """Hand a result to the background thread; the caller goes on at once (workers never wait)."""
        if self.export:
            ev.onnx = str(self.out_dir / f"{ev.name}.onnx")
            ev.encodings = str(self.out_dir / f"{ev.name}.encodings")
        self.results[ev.name] = ev
        self._futures.append(self._logger.submit(self._finish, ev, profile, res))
        return ev

    def _cached(self, name: str, profile: Profile) -> Evaluated:
        ev = self._evaluated(name, profile, self.done[profile.key], True)
        return self._submit(ev, profile, None)

    def _known(self, key: str, early: bool) -> bool:
        """Whether a profile's stored result serves: any result for a caller that lets evaluations stop early;
        only a full one for a caller that needs the metric itself (a stopped one is evaluated again)."""
        rec = self.done.get(key)
        return rec is not None and (early or not rec.get("stopped_early", False))

    def _fresh(self, name: str, res: Result) -> Evaluated:
        if res.worker:
            self.peak_rss_mb[res.worker] = max(self.peak_rss_mb.get(res.worker, 0.0), round(res.peak_rss_mb, 1))
        self.done[res.profile.key] = {"metric": res.metric, "eval_seconds": res.eval_seconds,
                                      "samples_evaluated": res.samples, "stopped_early": res.stopped}
        self.ws.evaluated[res.profile.key] = self.done[res.profile.key]
        ev = self._evaluated(name, res.profile, self.done[res.profile.key], False)
        return self._submit(ev, res.profile, res)

    # -- many profiles ----------------------------------------------------------------------------
    def evaluate(self, pool: WorkerPool, profiles: dict[str, Profile], reference: Profile | None = None,
                 early: bool = False) -> dict[str, Evaluated]:
        """Evaluate named profiles (those the study already has are taken from it). Returns as soon as the
        metrics are in; export and logging finish in the background (see :meth:`flush`). ``reference``: a
        profile most of them share a prefix with (workers then evaluate them from its stored activations).
        ``early``: the caller needs only whether each meets the target, so an evaluation stops as soon as the
        profile cannot (sweeper.eval.early); such a result is marked ``stopped_early``."""
        by_key: dict[str, list[str]] = {}
        for name, p in profiles.items():
            by_key.setdefault(p.key, []).append(name)
        unique = {p.key: p for p in profiles.values()}
        early = early and self.ws.exp.early_stop
        todo = [p for k, p in unique.items() if not self._known(k, early)]
        if reference is not None:  # the reference first: its worker stores its activations while evaluating it
            todo.sort(key=lambda p: p.key != reference.key)
        bar = progress(len(unique), self.step, initial=len(unique) - len(todo))
        best: float | None = None
        try:
            for key, p in unique.items():
                if self._known(key, early):
                    for name in by_key[key]:
                        self._cached(name, p)
            for res in self._results(pool, todo, reference, self.ws.target if early else None):
                names = by_key[res.profile.key]
                ev = self._fresh(names[0], res)
                for name in names[1:]:
                    self._cached(name, res.profile)
                best = ev.metric if best is None else max(best, ev.metric)
                bar.set_postfix(best=f"{best:.4f}")
                bar.update(1)
        except BaseException:
            self.abort()
            raise
        finally:
            bar.close()
        return {name: self.results[name] for name in profiles}

    def stream(self, pool: WorkerPool, next_profile: Callable[[], tuple[str, Profile] | None],
               total: int | None = None, early: bool = False) -> Iterator[tuple[Evaluated, Profile]]:
        """Evaluate profiles as a search proposes them: whenever a worker is idle, ``next_profile()`` is
        asked for ``(name, profile)`` (None: nothing more for now); results are yielded as they complete,
        so an ask/tell search keeps every worker busy. Profiles the study already has are not evaluated.
        ``early``: as in :meth:`evaluate`."""
        ready: list[tuple[Evaluated, Profile]] = []
        early = early and self.ws.exp.early_stop
        target = self.ws.target if early else None

        def next_call() -> tuple[Any, tuple[Any, ...]] | None:
            while (item := next_profile()) is not None:
                name, p = item
                if self._known(p.key, early):
                    ready.append((self._cached(name, p), p))
                    continue
                return (name, p), (p.to_json(), None, None, target)
            return None

        bar = progress(total or 0, self.step) if total else None
        try:
            while True:
                produced = False
                for (name, p), out in pool.map_dynamic("evaluate", next_call):
                    produced = True
                    while ready:
                        yield ready.pop(0)
                    ev = self._fresh(name, result_from(out))
                    if bar is not None:
                        bar.update(1)
                    yield ev, p
                if ready:
                    produced = True
                    while ready:
                        yield ready.pop(0)
                if not produced:
                    break
        except BaseException:
            self.abort()
            raise
        finally:
            if bar is not None:
                bar.close()

    def flush(self) -> None:
        """Wait until every export, MLflow run and study record handed to the background is done."""
        futures, self._futures = self._futures, []
        for f in futures:
            f.result()

    def abort(self) -> None:
        """Interrupted: drop what has not started; what is running finishes (storage stays consistent)."""
        for f in self._futures:
            f.cancel()
        self._logger.shutdown(wait=True, cancel_futures=True)

    def export_profiles(self, named: dict[str, Profile]) -> dict[str, tuple[Path, Path]]:
        """Export chosen profiles (QDQ + encodings) into the output folder and attach them to their MLflow
        child runs (for sweeps that do not export every profile)."""
        ws = self.ws
        self.flush()  # child runs must exist before artifacts are attached to them
        out: dict[str, tuple[Path, Path]] = {}
        for name, profile in named.items():
            onnx_path, enc_path = self.out_dir / f"{name}.onnx", self.out_dir / f"{name}.encodings"
            save_export(export_qdq(ws.graph, ws.table, profile), ws.table.to_aimet(profile), onnx_path, enc_path)
            out[name] = (onnx_path, enc_path)
            if self.tracker is not None and self.logs_exports(self.done.get(profile.key, {}).get("metric")):
                self.tracker.attach(profile.key, [onnx_path, enc_path])
        return out

    def logs_exports(self, metric: float | None) -> bool:
        """Whether a profile's QDQ model and encodings go to its MLflow run: always with ``tracking.artifacts:
        all``; with ``accepted`` only when the profile meets the target (its metric is known and passes)."""
        if self.ws.exp.tracking_artifacts == "all":
            return True
        return metric is not None and self.ws.meets(float(metric))

    @staticmethod
    def _results(pool: WorkerPool, todo: list[Profile], reference: Profile | None, target: Any) -> Iterator[Result]:
        if todo:
            yield from pool.map_unordered(todo, reference, target)

    def finish(self, metrics: dict[str, float] | None = None, artifacts: list[Path] | None = None) -> None:
        self.flush()
        self._logger.shutdown(wait=True)
        if self.tracker is not None:
            self.tracker.end_step(metrics, artifacts)


def write_json(path: Path, doc: object) -> None:
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")


__all__ = ["Evaluated", "Sweep", "progress", "write_json"]
