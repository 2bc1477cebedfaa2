"""``tracking.artifacts: accepted``: MLflow keeps the QDQ model and encodings only for profiles that meet the target
(every profile still gets its child run, metrics and assignment); with the default ``all`` every profile's export
is logged. Checked in the MLflow store itself (a SQLite store and a local artifact folder in tmp_path) with the
MLflow client, after ``sweeper baseline`` and ``sweeper amp`` (whose front and passing uniform candidates are
exported after the search and attached to their runs) on the tiny CNN of conftest, in process on the local pool."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import cnn_data, cnn_model, write_experiment

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
MAX_DROP = 0.01  # cosine: w8a8 ~0.9998 passes, w4a8 ~0.978 and w2a8 ~0.72 miss


def _runs(tmp: Path, name: str, step: str) -> tuple[Any, list[Any]]:
    """The MLflow client and the child runs of the step's parent run."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("sweeper.step") == step]
    assert len(parents) == 1, [r.data.tags.get("sweeper.step") for r in runs]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert children
    return client, children


def _exports(client: Any, run: Any) -> set[str]:
    return {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "export")}


def _setup(tmp: Path, artifacts: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp)  # the SQLite store's artifact folder is ./mlartifacts
    return write_experiment(tmp, cnn_model(), cnn_data(), max_drop=MAX_DROP, candidates="[w8a8, w4a8, w2a8]",
                            extra=f"  artifacts: {artifacts}\n")  # appended to the tracking section


@pytest.mark.parametrize("artifacts", ["accepted", "all"])
def test_baseline_logs_exports_by_the_artifacts_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        artifacts: str) -> None:
    from sweeper.cli import main

    exp = _setup(tmp_path, artifacts, monkeypatch)
    assert f"tracking:\n  uri: sqlite:///{tmp_path / 'mlflow.db'}\n  artifacts: {artifacts}\n" in exp.read_text()
    assert main(["baseline", str(exp)]) == 0
    doc = json.loads((tmp_path / "out" / "baseline" / "results.json").read_text())
    meets = {r["name"]: r["meets_target"] for r in doc["results"]}
    assert meets == {"w8a8": True, "w4a8": False, "w2a8": False}
    client, children = _runs(tmp_path, exp.parent.name.replace("-", "_")[:40], "baseline")
    assert sorted(r.info.run_name for r in children) == ["w2a8", "w4a8", "w8a8"]
    for run in children:
        name = run.info.run_name
        logged = _exports(client, run)
        if meets[name] or artifacts == "all":
            assert logged == {f"{name}.onnx", f"{name}.encodings"}, (name, logged)
        else:
            assert logged == set(), (name, logged)
        # every profile keeps its run, metrics and assignment whatever the setting
        assert {"metric", "drop", "bops_ratio"} <= set(run.data.metrics)
        assert "assignment.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
    # the exports themselves are written to the output folder either way
    assert all(Path(r["onnx"]).is_file() for r in doc["results"])


def test_amp_attaches_exports_only_to_profiles_that_meet_the_target(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from sweeper.cli import main
    from sweeper.quant.profile import Profile

    exp = _setup(tmp_path, "accepted", monkeypatch)
    assert main(["amp", str(exp), "--candidates", "w2a8,w4a8,w8a8"]) == 0
    doc = json.loads((tmp_path / "out" / "amp" / "results.json").read_text())
    acc = doc["accepted"]
    assert acc is not None and acc["drop"] <= MAX_DROP
    assert any(f["drop"] > MAX_DROP for f in doc["pareto_front"])  # the front holds failing profiles, exported
    client, children = _runs(tmp_path, exp.parent.name.replace("-", "_")[:40], "amp")
    assert len(children) == doc["evaluations"]
    with_exports = {r.data.tags["sweeper.profile_hash"]: r for r in children if _exports(client, r)}
    assert Profile.make(acc["assignment"]).key in with_exports  # the accepted profile's export is logged
    for run in with_exports.values():
        assert run.data.metrics["drop"] <= MAX_DROP, (run.info.run_name, run.data.metrics["drop"], _exports(client, run))
