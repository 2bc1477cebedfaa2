"""Tracker: one MLflow experiment per experiment name, a parent run per step, a child run per profile."""

from __future__ import annotations

import json
import logging
import os
import tempfile
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
        logging.getLogger("mlflow").setLevel(logging.ERROR)
        logging.getLogger("alembic").setLevel(logging.ERROR)
        import mlflow

        for name in ("mlflow", "mlflow.store.db.utils", "alembic"):
            logging.getLogger(name).setLevel(logging.ERROR)
        self._mlflow = mlflow
        self.uri = resolve_uri(uri)
        mlflow.set_tracking_uri(self.uri)
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

    def start_step(self, step: str, params: Mapping[str, Any]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=step,
                                     tags={"sweeper.step": step, "sweeper.version": sweeper.__version__})
        self.parent_id = run.info.run_id
        for k, v in params.items():
            self.client.log_param(self.parent_id, k, str(v)[:6000])
        return self.parent_id

    def log_profile(self, name: str, params: Mapping[str, Any], metrics: Mapping[str, float],
                    tags: Mapping[str, str], artifacts: Mapping[str, Path] | None = None,
                    assignment: Mapping[str, str] | None = None) -> str:
        """One child run under the current step."""
        all_tags = {"sweeper.version": sweeper.__version__, **tags}
        if self.parent_id:
            all_tags["mlflow.parentRunId"] = self.parent_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        rid = run.info.run_id
        import time

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
                self.client.log_artifact(rid, str(p))
        for _, path in (artifacts or {}).items():
            self.client.log_artifact(rid, str(path), artifact_path="export")
        self.client.set_terminated(rid)
        return rid

    def end_step(self, metrics: Mapping[str, float] | None = None, artifacts: list[Path] | None = None) -> None:
        if not self.parent_id:
            return
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        if metrics:
            self.client.log_batch(self.parent_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        for a in artifacts or []:
            self.client.log_artifact(self.parent_id, str(a))
        self.client.set_terminated(self.parent_id)
        self.parent_id = None
