"""End to end on the real example: the MNIST CNN through `sweeper baseline` on Ray, MLflow on SQLite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from sweeper.model.session import reference_session

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.smoke]


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    work = tmp_path_factory.mktemp("mnist")
    res = subprocess.run(
        [sys.executable, "-m", "sweeper", "baseline", str(ROOT / "experiments" / "mnist_cnn.yaml"),
         "--output", str(work / "out"), "--workers", "2"],
        cwd=work, capture_output=True, text=True, timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return work, res


def test_table_and_results(baseline_run) -> None:  # noqa: ANN001
    work, res = baseline_run
    assert "fp32" in res.stdout and "chosen" in res.stdout
    doc = json.loads((work / "out" / "baseline" / "results.json").read_text())
    assert doc["fp32_metric"] == pytest.approx(1449 / 1541)  # 94.03 %
    rows = {r["name"]: r for r in doc["results"]}
    assert set(rows) == {"w8a8", "w8a16", "w16a16", "fp16", "w4a8", "w4a16", "w4a4", "w2a8"}
    assert abs(rows["w8a8"]["metric"] - 0.9416) <= 0.003  # AIMET-ONNX 2.42: 94.16 %
    assert rows["w2a8"]["metric"] < rows["w4a8"]["metric"]
    assert rows["w8a8"]["bops_ratio"] == pytest.approx(1.0) and rows["w4a8"]["bops_ratio"] == pytest.approx(0.5)
    passing = [r for r in doc["results"] if r["meets_target"]]
    cheapest = min(passing, key=lambda r: (r["bops_ratio"], r["size_mb"]))
    assert doc["chosen"] == cheapest["name"]
    for r in doc["results"]:
        assert Path(r["onnx"]).is_file() and Path(r["encodings"]).is_file()
        enc = json.loads(Path(r["encodings"]).read_text())
        assert enc["version"] == "1.0.0" and enc["param_encodings"]
    assert not list((work / "out").glob(".*staging*"))
    prep = doc["prepare_seconds"]  # the driver's preparation, phase by phase
    assert {"model", "data", "calibration", "weight_aware_calibration", "encodings", "fp32_reference",
            "total"} <= set(prep)
    assert prep["total"] == pytest.approx(sum(v for k, v in prep.items() if k not in ("total", "cpu")), abs=0.01)
    assert 0 < prep["cpu"]  # the driver process's CPU seconds beside the wall time
    assert prep["calibration"] > 0 and prep["fp32_reference"] > 0
    # the unit: a median of three runs, fewer only once they took FP32_TIMING_BUDGET_S (a loaded machine)
    from sweeper.search.step import FP32_TIMING_BUDGET_S, FP32_TIMINGS

    runs = doc["fp32_eval_runs"]
    assert doc["fp32_eval_seconds"] > 0 and 1 <= runs <= FP32_TIMINGS
    assert runs == FP32_TIMINGS or doc["fp32_eval_seconds"] * runs >= FP32_TIMING_BUDGET_S / 2


def _sim_logits(precision: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sweeper.config.experiment import load_experiment
    from sweeper.pipeline import Workspace
    from sweeper.quant.profile import Profile
    from sweeper.sim.quantsim import QuantSim

    ws = Workspace(load_experiment(str(ROOT / "experiments" / "mnist_cnn.yaml")))
    sim = QuantSim(ws.graph, ws.table, threads=1, precisions=ws.exp.candidates)
    sim.apply(Profile.uniform([g.name for g in ws.graph.groups], precision))
    x, y = ws.eval_data["input"], ws.eval_data["labels"]
    out = np.concatenate([sim.run({"input": x[i:i + 256]})[0] for i in range(0, len(x), 256)])
    ws.close()
    return out, x, y


@pytest.mark.parametrize("precision", ["w8a8", "w4a16", "fp16"])
def test_exported_qdq_reproduces_the_simulation(baseline_run, precision: str) -> None:  # noqa: ANN001
    work, _ = baseline_run
    path = work / "out" / "baseline" / f"{precision}.onnx"
    sim_out, x, y = _sim_logits(precision)
    results = {r["name"]: r for r in json.loads((work / "out" / "baseline" / "results.json").read_text())["results"]}

    def run(level: ort.GraphOptimizationLevel | None) -> np.ndarray:
        so = ort.SessionOptions()
        if level is None:  # the session options the export names for sim = export
            sess = reference_session(str(path))
        else:
            so.graph_optimization_level = level
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        return np.concatenate([sess.run(None, {"input": x[i:i + 256]})[0] for i in range(0, len(x), 256)])

    plain = run(None)
    top1 = float((plain.argmax(1) == y).mean())
    assert top1 == results[precision]["metric"]  # exactly the simulation's metric
    assert float((sim_out.argmax(1) == y).mean()) == top1
    optimized = run(ort.GraphOptimizationLevel.ORT_ENABLE_ALL)  # ORT fuses Q/DQ into integer kernels
    agree = float((optimized.argmax(1) == sim_out.argmax(1)).mean())
    assert agree >= 0.999, agree


def test_mlflow_has_one_child_run_per_precision(baseline_run) -> None:  # noqa: ANN001
    import mlflow

    work, _ = baseline_run
    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mnist_cnn")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("sweeper.step") == "baseline"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 8
    names = sorted(r.info.run_name for r in children)
    assert names == sorted(["w8a8", "w8a16", "w16a16", "fp16", "w4a8", "w4a16", "w4a4", "w2a8"])
    for r in children:
        assert {"metric", "drop", "bops_ratio", "size_mb", "eval_seconds"} <= set(r.data.metrics)
        arts = {a.path for a in client.list_artifacts(r.info.run_id, "export")}
        assert any(a.endswith(".onnx") for a in arts) and any(a.endswith(".encodings") for a in arts)
        assert "assignment.json" in {a.path for a in client.list_artifacts(r.info.run_id)}
        assert r.data.tags["sweeper.profile_hash"]
