"""`sweeper amp` on the real example: a mixed profile that meets the target, no costlier than the cheapest
passing uniform candidate, exported as QDQ that plain onnxruntime runs at the reported accuracy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sweeper.model.session import reference_session

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def test_amp_greedy_on_mnist(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "sweeper", "amp", str(ROOT / "experiments" / "mnist_cnn.yaml"), "--output",
         str(tmp_path / "out"), "--candidates", "w2a8,w4a4,w4a8,w8a8,w8a16,fp16", "--max-drop", "0.005"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    d = json.loads((tmp_path / "out" / "amp" / "results.json").read_text())
    acc = d["accepted"]
    assert acc["mixed"] and acc["drop"] <= 0.005
    uniform = {a["name"]: a for a in d["all"] if a["name"].startswith("uniform:")}
    passing = [u for u in uniform.values() if d["fp32_metric"] - u["metric"] <= 0.005]
    assert acc["cost"] <= min(u["cost"] for u in passing)
    assert acc["bops_ratio"] < 2.38  # aimet-onnx's AMP accepted 2.38x w8a8 on the same problem
    assert acc["measured_latency_ms"] > 0 and d["pareto_front"]
    # the exported mixed-precision QDQ model runs in plain ORT and reproduces the simulated accuracy
    from sweeper.examples import mnist

    ev = mnist.evaluation_data()
    sess = reference_session(acc["onnx"])  # the session options the export names for sim = export
    logits = np.concatenate([sess.run(None, {"input": ev["input"][i:i + 256]})[0] for i in range(0, 1541, 256)])
    assert float((logits.argmax(1) == ev["labels"]).mean()) == acc["metric"]
    # every evaluated profile is one MLflow child run
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mnist_cnn")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == d["evaluations"]
    assert len({r.data.tags["sweeper.profile_hash"] for r in children}) == d["evaluations"]
