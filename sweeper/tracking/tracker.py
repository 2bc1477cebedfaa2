"""Tracker: one MLflow experiment per experiment name, a parent run per step, a child run per profile."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sweeper

DEFAULT_URI = "sqlite:///mlflow.db"


def resolve_uri(configured: str | None) -> str:
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


class Tracker:
    """Thin layer over MLflow used by every step (params, metrics, artifacts, tags)."""

    def __init__(self, experiment: str, uri: str | None = None) -> None:
        # offline-first: no usage telemetry from a library call (set MLFLOW_DISABLE_TELEMETRY=false to allow)
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        logging.getLogger("mlflow").setLevel(logging.ERROR)
        logging.getLogger("alembic").setLevel(logging.ERROR)
        import mlflow

        for name in ("mlflow", "mlflow.store.db.utils", "alembic"):
            logging.getLogger(name).setLevel(logging.ERROR)
        self.uri = resolve_uri(uri)
        client = mlflow.MlflowClient(self.uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            artifact_location = None
            if self.uri.startswith("sqlite:"):
                artifact_location = Path("mlartifacts").resolve().as_uri()
            self.experiment_id = client.create_experiment(experiment, artifact_location=artifact_location)
        else:
            self.experiment_id = exp.experiment_id
        self.client = client
        self.parent_id: str | None = None
        self.logged: dict[str, str] = {}

    def start_step(self, step: str, params: Mapping[str, Any], resume_run_id: str | None = None) -> str:
        """The parent run of a step; ``resume_run_id`` continues an interrupted sweep's parent run."""
        self.logged: dict[str, str] = {}
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
        run = self.client.create_run(self.experiment_id, run_name=step,
                                     tags={"sweeper.step": step, "sweeper.version": sweeper.__version__})
        self.parent_id = run.info.run_id
        from mlflow.entities import Param

        self.client.log_batch(self.parent_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        return self.parent_id

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
        all_tags = {"sweeper.version": sweeper.__version__, **tags}
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

    def end_step(self, metrics: Mapping[str, float] | None = None, artifacts: list[Path] | None = None) -> None:
        if not self.parent_id:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        if metrics:
            self.client.log_batch(self.parent_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        for a in artifacts or []:
            self.client.log_artifact(self.parent_id, str(a))
        self.client.set_terminated(self.parent_id)
        self.parent_id = None
