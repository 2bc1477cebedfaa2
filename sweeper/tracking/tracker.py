"""Tracker: one MLflow experiment per experiment name, a parent run per step, a child run per profile."""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sweeper.errors import SweeperError
from sweeper.version import __version__

DEFAULT_URI = "sqlite:///mlflow.db"
# MLflow 3 opens an experiment on its GenAI overview unless it is marked as model development; sweeper's runs
# are classic ML runs (params, metrics, artifacts). Values as in MLflow's UI: genai_development, custom_model_development.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
# A saved runs-table view (MLflow's shared view state, read from an experiment tag by the UI): every run in one
# flat list sorted by BOPs, with the columns a sweep is compared on. `sweeper ui` prints links that open it.
VIEW_KEY = "sweeper"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
SHOWN_METRICS = ("metric", "drop", "bops_ratio", "est_latency_ms", "size_mb")
VIEW = {"orderByKey": "metrics.`bops_ratio`", "orderByAsc": True,
        "selectedColumns": ["params.`step`", "params.`profile`", *(f"metrics.`{m}`" for m in SHOWN_METRICS)]}


def resolve_uri(configured: str | None) -> str:
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def ui_path(experiment_id: str) -> str:
    """The MLflow UI route of an experiment's runs, as a model-training experiment, in sweeper's view."""
    return f"#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"


def _client(uri: str):  # noqa: ANN202
    """An MLflow client for ``uri`` with MLflow's logging and telemetry quiet (sweeper is meant to run offline)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # set MLFLOW_DISABLE_TELEMETRY=false to allow
    for name in ("mlflow", "mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import mlflow

    for name in ("mlflow", "mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return mlflow.MlflowClient(uri)


def _check_server(uri: str) -> None:
    """An http(s) tracking server must accept a connection (MLflow's client retries an unreachable one for
    minutes before it fails)."""
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=5).close()
    except OSError as exc:
        raise SweeperError(f"tracking store {uri}", f"no MLflow server answers at {parts.hostname}:{port} "
                                                    f"({exc.strerror or type(exc).__name__}): expected a running "
                                                    "`mlflow server` (tracking.uri, MLFLOW_TRACKING_URI or --uri)") from None


def _store_error(uri: str, exc: Exception) -> SweeperError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return SweeperError(f"tracking store {uri}", f"MLflow cannot use it ({type(exc).__name__}: {first}); expected "
                                                 "a reachable store such as sqlite:///mlflow.db (tracking.uri, "
                                                 "MLFLOW_TRACKING_URI or --uri)")


def _mark_experiment(client: Any, experiment: Any, name: str) -> None:
    """Tag a sweeper experiment so MLflow's UI opens it on its runs, as model development (missing tags only,
    except sweeper's own view, which follows this version)."""
    tags = dict(experiment.tags or {})
    wanted = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, "sweeper.version": __version__,
              "mlflow.note.content": f"sweeper: post-training quantization sweeps of `{name}`. One parent run per "
                                     "step (summary metrics: the cheapest profile meeting the target), one child "
                                     "run per evaluated profile (metric, drop, bops_ratio, est_latency_ms, size_mb)."}
    for key, value in wanted.items():
        if key not in tags:
            client.set_experiment_tag(experiment.experiment_id, key, value)
    view = json.dumps(VIEW)
    if tags.get(VIEW_TAG) != view:
        client.set_experiment_tag(experiment.experiment_id, VIEW_TAG, view)


def prepare_ui(uri: str) -> list[tuple[str, str]]:
    """(experiment name, UI route) of every sweeper experiment in the store, each tagged for the UI first."""
    try:
        client = _client(uri)
        found = []
        for exp in client.search_experiments(max_results=1000):
            if "sweeper.version" in (exp.tags or {}):
                _mark_experiment(client, exp, exp.name)
                found.append((exp.name, ui_path(exp.experiment_id)))
    except Exception as exc:  # noqa: BLE001 - any store failure is the user's store: one line
        raise _store_error(uri, exc) from None
    return found


class Tracker:
    """Thin layer over MLflow used by every step (params, metrics, artifacts, tags)."""

    def __init__(self, experiment: str, uri: str | None = None) -> None:
        self.uri = resolve_uri(uri)
        _check_server(self.uri)
        try:
            client = _client(self.uri)
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                artifact_location = None
                if self.uri.startswith("sqlite:"):
                    artifact_location = Path("mlartifacts").resolve().as_uri()
                client.create_experiment(experiment, artifact_location=artifact_location,
                                         tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
                exp = client.get_experiment_by_name(experiment)
            _mark_experiment(client, exp, experiment)
        except Exception as exc:  # noqa: BLE001 - a store MLflow cannot open is the user's input: one line
            raise _store_error(self.uri, exc) from None
        self.experiment_id = exp.experiment_id
        self.client = client
        self.parent_id: str | None = None
        self.workflow_id: str | None = None  # the workflow's run (sweeper run): every step's run nests in it
        self.logged: dict[str, str] = {}
        self.step_params: dict[str, Any] = {}

    def start_step(self, step: str, params: Mapping[str, Any], resume_run_id: str | None = None) -> str:
        """The parent run of a step; ``resume_run_id`` continues an interrupted sweep's parent run."""
        self.logged: dict[str, str] = {}
        self.step_params = {"step": step, **params}
        if resume_run_id:
            try:
                run = self.client.get_run(resume_run_id)
            except Exception:  # noqa: BLE001 - deleted or from another store: start afresh
                run = None
            if run is not None and run.info.experiment_id == self.experiment_id:
                self.parent_id = resume_run_id
                self.client.update_run(resume_run_id, status="RUNNING")
                self.logged = self.child_runs()
                return resume_run_id
        tags = {"sweeper.step": step, "sweeper.version": __version__}
        if self.workflow_id:
            tags["mlflow.parentRunId"] = self.workflow_id
        run = self.client.create_run(self.experiment_id, run_name=step, tags=tags)
        self.parent_id = run.info.run_id
        from mlflow.entities import Param

        self.client.log_batch(self.parent_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        return self.parent_id

    def start_workflow(self, params: Mapping[str, Any]) -> str:
        """The run of a whole workflow (``sweeper run``): the steps' runs started afterwards are its children."""
        from mlflow.entities import Param

        run = self.client.create_run(self.experiment_id, run_name="workflow",
                                     tags={"sweeper.step": "workflow", "sweeper.version": __version__})
        self.workflow_id = run.info.run_id
        self.client.log_batch(self.workflow_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        return self.workflow_id

    def end_workflow(self, metrics: Mapping[str, float], tags: Mapping[str, str], note: str,
                     artifacts: list[Path], failed: bool = False) -> None:
        """Close the workflow's run with its summary: the accepted profile's figures, which step produced it."""
        if not self.workflow_id:
            return
        from mlflow.entities import Metric

        run_id, self.workflow_id = self.workflow_id, None
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        for k, v in {**tags, "mlflow.note.content": note}.items():
            self.client.set_tag(run_id, k, v)
        for a in artifacts:
            self.client.log_artifact(run_id, str(a))
        self.client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")

    def child_runs(self) -> dict[str, str]:
        """profile hash -> run id of the child runs already logged under the current step."""
        if not self.parent_id:
            return {}
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{self.parent_id}'",
            max_results=50000)
        return {r.data.tags["sweeper.profile_hash"]: r.info.run_id for r in runs
                if "sweeper.profile_hash" in r.data.tags}

    def log_profile(self, name: str, params: Mapping[str, Any], metrics: Mapping[str, float],
                    tags: Mapping[str, str], artifacts: Mapping[str, Path] | None = None,
                    assignment: Mapping[str, str] | None = None) -> str:
        """One child run under the current step; a profile already logged there is not logged again."""
        key = tags.get("sweeper.profile_hash")
        if key and key in self.logged:
            return self.logged[key]
        all_tags = {"sweeper.version": __version__, **tags}
        if self.parent_id:
            all_tags["mlflow.parentRunId"] = self.parent_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        rid = run.info.run_id
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        self.client.log_batch(
            rid,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)[:6000]) for k, v in params.items()],
        )
        if assignment is not None:
            with tempfile.TemporaryDirectory() as tmp:
                p = Path(tmp) / "assignment.json"
                p.write_text(json.dumps(dict(assignment), indent=1, sort_keys=True))
                self._log_file(rid, run.info.artifact_uri, p, None)
        for _, path in (artifacts or {}).items():
            self._log_file(rid, run.info.artifact_uri, Path(path), "export")
        self.client.set_terminated(rid)
        if key:
            self.logged[key] = rid
        return rid

    def _log_file(self, run_id: str, artifact_uri: str, path: Path, artifact_path: str | None) -> None:
        """Log one file as an artifact of a run. A local artifact store is written through its repository
        (no lookup of the run: this is on every profile's path); other stores go through the client."""
        if artifact_uri.startswith("file:"):
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            get_artifact_repository(artifact_uri).log_artifact(str(path), artifact_path)
        else:
            self.client.log_artifact(run_id, str(path), artifact_path=artifact_path)

    def attach(self, profile_key: str, paths: list[Path]) -> None:
        """Add artifacts (an export chosen after the sweep) to the child run of a profile."""
        rid = self.logged.get(profile_key)
        if rid is None:
            return
        for p in paths:
            self.client.log_artifact(rid, str(p), artifact_path="export")

    def step_summary(self) -> tuple[dict[str, float], str, str | None]:
        """Metrics, description and chosen run name of the current step, from its child runs: how many profiles,
        how many meet the target, and the cheapest of those (by the step's cost: estimated latency for
        ``cost: latency``, else BOPs) under the child runs' own metric names, so that a step's row in the runs
        table reads like its answer. The analysis step's profiles are probes: no chosen one."""
        runs = self.client.search_runs([self.experiment_id], max_results=50000,
                                       filter_string=f"tags.mlflow.parentRunId = '{self.parent_id}'")
        rows = [(r.info.run_name or r.info.run_id, r.data.metrics) for r in runs]
        step = str(self.step_params.get("step", ""))
        summary: dict[str, float] = {"profiles": float(len(rows))}
        max_drop = _as_float(self.step_params.get("max_drop"))
        if step == "analyze" or max_drop is None:
            return summary, f"{step}: {len(rows)} profiles evaluated.", None
        passing = [(n, m) for n, m in rows if "drop" in m and m["drop"] <= max_drop]
        summary["profiles_meeting_target"] = float(len(passing))
        text = f"{step}: {len(rows)} profiles evaluated, {len(passing)} meet the target (drop <= {max_drop:g})"
        if not passing:
            return summary, text + ".", None
        key = "est_latency_ms" if self.step_params.get("cost") == "latency" else "bops_ratio"
        inf = float("inf")
        name, best = min(passing, key=lambda nm: (nm[1].get(key, inf), nm[1].get("size_mb", inf),
                                                  -nm[1].get("metric", -inf)))
        summary.update({k: best[k] for k in SHOWN_METRICS if k in best})
        shown = ", ".join(f"{k} {best[k]:.4g}" for k in SHOWN_METRICS if k in best)
        return summary, f"{text}; the cheapest of them by {key}: **{name}** ({shown}).", name

    def end_step(self, metrics: Mapping[str, float] | None = None, artifacts: list[Path] | None = None) -> None:
        """Close the step's parent run: its summary (:meth:`step_summary`) and the step's own metrics, its
        artifacts, and every PNG also as an MLflow image (shown in the run's charts, not only its files)."""
        if not self.parent_id:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        summary, note, chosen = self.step_summary()
        summary.update(metrics or {})
        self.client.log_batch(self.parent_id, metrics=[Metric(k, float(v), now, 0) for k, v in summary.items()])
        self.client.set_tag(self.parent_id, "mlflow.note.content", note)
        if chosen:
            self.client.set_tag(self.parent_id, "sweeper.chosen", chosen)
        for a in artifacts or []:
            self.client.log_artifact(self.parent_id, str(a))
            if Path(a).suffix.lower() == ".png":
                self._log_image(Path(a))
        self.client.set_terminated(self.parent_id)
        self.parent_id = None

    def _log_image(self, path: Path) -> None:
        """A plot as an MLflow image of the parent run (key: the file's stem)."""
        from PIL import Image

        with Image.open(path) as img:
            self.client.log_image(self.parent_id, img.convert("RGB"), key=path.stem, step=0, synchronous=True)


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
