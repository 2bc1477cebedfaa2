"""Resumable sweeps: every evaluated profile is a completed trial of an Optuna study in a storage
(SQLite file by default, an RDB URL on a cluster). A rerun loads the study and skips what is done."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

from sweeper.quant.profile import Profile

PARENT_ATTR = "mlflow_parent_run_id"
RECORD_ATTR = "sweeper"  # the trial's record: profile key and JSON, metric, timing, worker, MLflow run id


def study_name(experiment: str, step: str, fingerprint: dict[str, Any]) -> str:
    """Name of a step's study; the fingerprint (calibration, metric, data...) keeps incompatible runs apart."""
    digest = hashlib.sha1(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{experiment}/{step}/{digest}"


def open_storage(url: str, attempts: int = 6) -> Any:
    """An Optuna RDB storage that tolerates other processes opening the same database at the same time.

    Two processes creating the schema of a fresh database race on the alembic version row (one gets an
    IntegrityError); SQLite writers also meet "database is locked". Both are transient: wait and retry.
    """
    import optuna
    import sqlalchemy.exc

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 60}  # wait for another writer's lock instead of failing at once
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def prepared_storage(url: str, name: str, fresh: bool) -> Any:
    """The storage of study ``name`` (see :func:`open_storage`); with ``fresh``, that study deleted first."""
    import optuna

    rdb = open_storage(url)
    if fresh:
        try:
            optuna.delete_study(study_name=name, storage=rdb)
        except KeyError:
            pass
    return rdb


class SweepStudy:
    """An Optuna study whose completed trials are the evaluated profiles of a step: the value is the metric,
    one JSON user attribute holds the record (profile key and assignment, metric, timing, worker, MLflow run).

    Trials carry no per-group parameters: recording is on the driver's hot path and Optuna writes one row
    (and a compatibility query) per parameter, 93 of them per trial on MiniLM. Searches that sample per-group
    precisions (sweeper.search.amp.optuna_search.OptunaAMP) keep their own study with the parameters."""

    def __init__(self, storage: str, name: str, fresh: bool = False) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        logging.getLogger("optuna").setLevel(logging.WARNING)
        self._optuna = optuna
        rdb = prepared_storage(storage, name, fresh)
        self.storage = storage
        self.name = name
        self.study = optuna.create_study(study_name=name, storage=rdb, load_if_exists=True, direction="maximize")

    def completed(self) -> dict[str, dict[str, Any]]:
        """profile key -> the record stored with its trial: complete trials, and pruned ones (evaluations
        that stopped early, their records marked ``stopped_early``); a later trial of a profile wins."""
        from optuna.trial import TrialState

        done: dict[str, dict[str, Any]] = {}
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            rec = t.user_attrs.get(RECORD_ATTR, t.user_attrs)  # older studies kept one attribute per field
            key = rec.get("profile_key")
            if key:
                done[key] = dict(rec)
                if t.state == TrialState.PRUNED:
                    done[key]["stopped_early"] = True
        return done

    def record(self, profile: Profile, metric: float, attrs: dict[str, Any], stopped_at: int | None = None) -> None:
        """One evaluated profile as a trial: complete with its metric, or, when its evaluation stopped early
        after ``stopped_at`` samples, pruned (Optuna's state for a trial stopped early) with the metric so far as
        its intermediate value at that step."""
        record = {"profile_key": profile.key, "profile": profile.to_json(), **attrs}  # one JSON attribute
        if stopped_at is not None:
            trial = self._optuna.trial.create_trial(state=self._optuna.trial.TrialState.PRUNED,
                                                    intermediate_values={int(stopped_at): metric},
                                                    user_attrs={RECORD_ATTR: record})
        else:
            trial = self._optuna.trial.create_trial(value=metric, user_attrs={RECORD_ATTR: record})
        self.study.add_trial(trial)

    @property
    def parent_run_id(self) -> str | None:
        value = self.study.user_attrs.get(PARENT_ATTR)
        return str(value) if value else None

    def set_parent_run_id(self, run_id: str) -> None:
        self.study.set_user_attr(PARENT_ATTR, run_id)
