"""`sweeper batch`: the workflow on two models over one Ray runtime, plus one broken experiment that must not
stop them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import cnn_model

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def test_batch_reports_every_model_and_isolates_failures(tmp_path: Path) -> None:
    exps = tmp_path / "exps"
    exps.mkdir()
    shutil.copy(ROOT / "experiments" / "mnist_cnn.yaml", exps / "a_mnist.yaml")
    onnx.save(cnn_model(), str(exps / "tiny.onnx"))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1, 8, 8)).astype(np.float32)
    np.savez(exps / "tiny.npz", x=x)
    (exps / "b_tiny.yaml").write_text("""name: tiny_cnn
model:
  onnx: tiny.onnx
data:
  calibration: tiny.npz
  evaluation: tiny.npz
metric: cosine
target:
  max_drop: 0.01
candidates: [w8a8, w8a16, fp16]
""")
    (exps / "c_broken.yaml").write_text("""name: broken
model:
  onnx: tiny.onnx
data:
  calibration: tiny.npz
  evaluation: tiny.npz
metric: top1
target:
  max_drop: 0.01
""")  # top1 needs labels: fails when the data is checked, after the others are scheduled
    res = subprocess.run([sys.executable, "-m", "sweeper", "batch", str(exps), "--output", str(tmp_path / "out")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert res.returncode == 1, res.stderr[-3000:]  # one model failed
    rows = {r["experiment"]: r for r in json.loads((tmp_path / "out" / "batch_summary.json").read_text())}
    assert set(rows) == {"mnist_cnn", "tiny_cnn", "broken"}
    assert rows["mnist_cnn"]["fp32_metric"] == pytest.approx(1449 / 1541)
    assert rows["tiny_cnn"]["chosen"] == "w8a8" and rows["tiny_cnn"]["metric"] > 0.99
    assert rows["tiny_cnn"]["stopped_at"] == "baseline"  # its cheapest candidate passes: rule 1 stops there
    # the example's cheapest candidate (w2a8) misses, Step 1 picks w4a8; LiteMP from w2a8 towards w4a8 meets the
    # target with 3 of 5 groups flipped (the README's figures: top-1 93.58 %, 0.37x the BOPs of w8a8) and stops
    mnist = rows["mnist_cnn"]
    assert mnist["chosen"] == "k=50% (3 groups flipped)" and mnist["step"] == mnist["stopped_at"] == "litemp"
    assert mnist["metric"] == pytest.approx(1442 / 1541) and mnist["drop"] <= 0.005
    flow = json.loads((tmp_path / "out" / "mnist_cnn" / "workflow.json").read_text())
    assert [o["step"] for o in flow["steps"]] == ["baseline", "litemp"]
    step1 = json.loads((tmp_path / "out" / "mnist_cnn" / "baseline" / "results.json").read_text())
    uniform = {r["name"]: r for r in step1["results"]}
    assert step1["chosen"] == "w4a8" and not uniform["w2a8"]["meets_target"]
    assert mnist["bops_ratio"] == pytest.approx(0.374, abs=0.001)
    assert mnist["bops_ratio"] < uniform["w4a8"]["bops_ratio"]  # cheaper than the uniform precision it beats
    # the accepted profile's exported QDQ model, in plain ONNX Runtime, scores the reported metric exactly
    from sweeper.examples import mnist as mnist_data
    from sweeper.model.session import reference_session

    accepted = flow["accepted"]
    assert accepted["profile"] == mnist["chosen"] and accepted["metric"] == mnist["metric"]
    data = mnist_data.evaluation_data()
    sess = reference_session(accepted["onnx"], 1)
    pred = np.concatenate([sess.run(None, {"input": data["input"][i:i + 256]})[0].argmax(1)
                           for i in range(0, len(data["labels"]), 256)])
    assert float(np.mean(pred == data["labels"])) == mnist["metric"]
    assert rows["broken"]["error"] and "labels missing" in rows["broken"]["error"]
    assert "mnist_cnn" in res.stdout and "tiny_cnn" in res.stdout and "labels missing" in res.stdout
    assert (tmp_path / "out" / "mnist_cnn" / "baseline" / "results.json").is_file()
