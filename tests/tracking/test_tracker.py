"""Tracker on a real MLflow SQLite store: the experiment is marked for MLflow's model-training view, a step's
parent run carries its summary (the cheapest profile meeting the target, under the child runs' metric names),
and plots are logged as images as well as files."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402

from sweeper.tracking.tracker import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, VIEW_TAG, Tracker, prepare_ui  # noqa: E402


def _profile(t: Tracker, name: str, metric: float, drop: float, bops: float, lat: float) -> None:
    t.log_profile(name, params={"step": "baseline", "profile": name},
                  metrics={"metric": metric, "drop": drop, "bops_ratio": bops, "est_latency_ms": lat, "size_mb": bops},
                  tags={"sweeper.profile_hash": name})


def test_parent_run_summary_images_and_experiment_tags(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    t = Tracker("exp", uri)
    t.start_step("baseline", {"max_drop": 0.01})
    _profile(t, "w2a8", 0.5, 0.4, 0.25, 0.1)  # fails the target
    _profile(t, "w4a8", 0.89, 0.005, 0.5, 0.3)  # the cheapest that passes
    _profile(t, "w8a8", 0.895, 0.0, 1.0, 0.2)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png = tmp_path / "pareto.png"
    fig.savefig(png)
    plt.close(fig)
    parent = t.parent_id
    t.end_step({"fp32_metric": 0.895}, [png])

    client = mlflow.MlflowClient(uri)
    run = client.get_run(parent)
    m = run.data.metrics
    assert m["profiles"] == 3 and m["profiles_meeting_target"] == 2
    assert m["bops_ratio"] == 0.5 and m["metric"] == 0.89 and m["fp32_metric"] == 0.895
    assert run.data.tags["sweeper.chosen"] == "w4a8" and "**w4a8**" in run.data.tags["mlflow.note.content"]
    assert run.data.tags.get("mlflow.loggedImages")
    files = [a.path for a in client.list_artifacts(parent)]
    assert "pareto.png" in files and "images" in files
    assert any(a.path.endswith(".png") and "pareto" in a.path for a in client.list_artifacts(parent, "images"))

    exp = client.get_experiment(t.experiment_id)
    assert exp.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert json.loads(exp.tags[VIEW_TAG])["selectedColumns"]
    assert prepare_ui(uri) == [("exp", f"#/experiments/{t.experiment_id}/runs?workflowType=machine_learning"
                                       "&viewStateShareKey=sweeper")]


def test_latency_cost_picks_the_fastest_passing_profile(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    t = Tracker("exp", f"sqlite:///{tmp_path / 'mlflow.db'}")
    t.start_step("amp", {"max_drop": 0.01, "cost": "latency"})
    _profile(t, "w4a8", 0.89, 0.005, 0.5, 0.3)
    _profile(t, "w8a8", 0.895, 0.0, 1.0, 0.2)
    metrics, _, chosen = t.step_summary()
    assert chosen == "w8a8" and metrics["est_latency_ms"] == 0.2
