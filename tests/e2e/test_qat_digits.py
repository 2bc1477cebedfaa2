"""End to end: ``sweeper qat`` on a small PyTorch CNN trained here on scikit-learn's digits.

At w2a8 post-training quantization loses about six points of top-1; QAT from those encodings recovers
most of it, and the exported QDQ model, run by plain ONNX Runtime, scores exactly what the simulation of
the learned encodings scored (the number reported)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def _experiment(tmp: Path, early_stop: bool = True) -> Path:
    path = tmp / "exp.yaml"
    path.write_text(f"""name: digits_cnn_qat
model:
  torch: sweeper.examples.digits_cnn:make_model
data:
  calibration: sweeper.examples.digits_cnn:calibration_data
  evaluation: sweeper.examples.digits_cnn:evaluation_data
metric: top1
target:
  max_drop: 0.01
  early_stop: {str(early_stop).lower()}
candidates: [w8a8, w2a8]
pool: local
output: {tmp / 'out'}
qat:
  data: sweeper.examples.digits_cnn:training_data
  epochs: 3
""")
    return path


def _top1(path: str, level: ort.GraphOptimizationLevel | None) -> tuple[float, np.ndarray]:
    """Top-1 of the QDQ model at ``path`` under ``level``, or (None) under the session options it names for
    sim = export (``sweeper.model.session.reference_session``)."""
    from sweeper.examples.digits_cnn import evaluation_data
    from sweeper.model.session import reference_session

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    if level is None:
        sess = reference_session(path)
    else:
        so.graph_optimization_level = level
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    data = evaluation_data()
    pred = sess.run(None, {"input": data["input"]})[0].argmax(-1)
    return float(np.mean(pred == data["labels"])), pred


def test_qat_cli_improves_w2a8_and_exports_what_it_simulated(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "sweeper", "qat", str(_experiment(tmp_path)), "--profile", "w2a8",
                          "--pool", "local", "--no-tracking"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "Step 5 - quantization-aware training" in res.stdout
    out = tmp_path / "out" / "qat"
    doc = json.loads((out / "results.json").read_text())
    assert doc["profile"] == "w2a8" and set(doc["assignment"].values()) == {"w2a8"}
    assert doc["metric_before"] < doc["fp32_metric"] - 0.03  # PTQ loses clearly at w2a8
    assert doc["metric_after"] >= doc["metric_before"] + 0.03  # QAT recovers
    assert doc["epochs"] == 3 and len(doc["losses"]) == 3 and doc["seconds"] > 0
    for key in ("onnx", "encodings", "trained_onnx", "trained_encodings"):
        assert Path(doc[key]).is_file() and Path(doc[key]).parent == out, key
    enc = json.loads(Path(doc["encodings"]).read_text())
    assert {e["bw"] for e in enc["param_encodings"]} == {2} and {e["bw"] for e in enc["activation_encodings"]} == {8}
    # the QDQ model in plain ONNX Runtime: the simulation's metric exactly (under the options it names), and
    # under the default optimizations
    plain, pred = _top1(doc["onnx"], None)
    assert plain == pytest.approx(doc["metric_after"], abs=1e-12)
    assert doc["export_max_abs_diff"] == 0.0
    optimized, pred_opt = _top1(doc["onnx"], ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    assert np.mean(pred == pred_opt) >= 0.99


def test_qat_api_keeps_a_mixed_profile_and_calls_the_user_training(tmp_path: Path) -> None:
    """An AMP results.json as the starting profile: every group trains at its own precision (fp32 groups stay
    float), the user's training function is what trains, and the exported encodings carry the mix."""
    sys.path.insert(0, str(ROOT / "tests"))
    import torch
    from conftest import cnn_data, cnn_model, write_experiment

    import sweeper
    from sweeper.quant.precision import Precision

    data = cnn_data(64)
    exp = write_experiment(tmp_path, cnn_model(), data, metric="cosine", candidates="[w8a8, w4a8]")
    calls: list[tuple[int, float]] = []

    def fit(model: torch.nn.Module, train_data: dict, settings: object) -> None:
        """Distil the FP32 outputs into the quantized model (a few Adam steps)."""
        x = torch.from_numpy(train_data["x"])
        target = torch.from_numpy(train_data["y"])
        opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
        for _ in range(settings.epochs):
            loss = torch.nn.functional.mse_loss(model(x), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            calls.append((len(model.input_names), float(loss.detach())))

    with sweeper.Session(exp, tracking=False, pool="local") as s:
        names = [g.name for g in s.ws.graph.groups]
        cycle = ["w8a16", "fp32", "w4a8"]  # three groups
        assignment = {n: cycle[i % len(cycle)] for i, n in enumerate(names)}
        (tmp_path / "amp.json").write_text(json.dumps({"accepted": {"assignment": assignment}}))
        train_data = {"x": data["x"], "y": s.ws.fp32_run({"x": data["x"]})[0]}
        rep = s.qat(str(tmp_path / "amp.json"), data=train_data, train=fit, epochs=5, lr=1e-3)
        # the exported QDQ model in plain ONNX Runtime under the session options it names, scored by the
        # experiment's metric on the whole evaluation set: what the simulation of the learned encodings scored
        from sweeper.model.session import reference_session

        exported = reference_session(rep.doc["onnx"], s.ws.threads)
        eval_set = s.ws.eval_set if s.ws.eval_set is not None else s.ws.evaluation_data()
        exported_metric = s.ws.evaluator.evaluate(lambda feeds: exported.run(None, feeds), eval_set, s.ws.reference)
    doc = rep.doc
    assert len(calls) == 5 and calls[-1][1] < calls[0][1]  # the user's function trained it
    assert doc["assignment"] == assignment and doc["train"] == "fit"
    enc = json.loads(Path(doc["encodings"]).read_text())
    groups = {w: g.name for g in s.ws.graph.groups for w in g.weights}
    bits = {e["name"]: (e["dtype"], e["bw"]) for e in enc["param_encodings"]}
    for w, g in groups.items():
        p = Precision.parse(assignment[g])
        want = None if p.is_fp32 else ("FLOAT", 16) if p.is_fp16 else ("INT", p.weight_bits)
        assert bits.get(w) == want, w
    assert doc["export_max_abs_diff"] == 0.0 and exported_metric == doc["metric_after"]  # sim = export, exactly
    assert doc["export_top1_agreement"] >= 0.9  # under ONNX Runtime's default optimizations
    # distilling the FP32 outputs brings the mix closer to them (measured: cosine 0.99112 -> 0.99567 of 1.0)
    assert doc["fp32_metric"] == 1.0 and doc["metric_after"] >= doc["metric_before"] + 0.002
    assert doc["drop_after"] < doc["drop_before"] and doc["meets_target"]


def test_run_trains_w2a8_then_repeats_steps_1_to_3_on_the_trained_weights(tmp_path: Path) -> None:
    """`sweeper run --qat` with a latency budget nothing meets (so Steps 1-3 all run): QAT of w2a8 (the
    failing candidate), then Steps 1-3 again on the trained float model in after_qat/, judged against the
    original FP32 model; the trained weights quantize better at w2a8 than the original ones did, and the
    exported w2a8 model of the trained weights scores what its simulation scored."""
    # w2a8 fails before and after QAT: its full metrics are compared (early stopping would stop both)
    res = subprocess.run([sys.executable, "-m", "sweeper", "run", str(_experiment(tmp_path, early_stop=False)), "--qat",
                          "--no-adaround", "--latency-budget", "1e-9", "--pool", "local", "--no-tracking"],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    out = tmp_path / "out"
    flow = json.loads((out / "workflow.json").read_text())
    steps = [s["step"] for s in flow["steps"]]
    assert steps[:4] == ["baseline", "litemp", "amp", "qat"] and steps[4] == "after_qat/baseline", flow["decisions"]
    first = json.loads((out / "baseline" / "results.json").read_text())
    again = json.loads((out / "after_qat" / "baseline" / "results.json").read_text())
    assert again["fp32_metric"] == first["fp32_metric"]  # the target's base: the model the user brought
    w2a8 = next(r for r in first["results"] if r["name"] == "w2a8")
    w2a8_again = next(r for r in again["results"] if r["name"] == "w2a8")
    assert w2a8_again["metric"] >= w2a8["metric"] + 0.02, (w2a8["metric"], w2a8_again["metric"])
    top1, _ = _top1(w2a8_again["onnx"], None)
    assert top1 == pytest.approx(w2a8_again["metric"], abs=1e-12)  # sim = export on the trained weights
    assert "after_qat/" in " ".join(flow["decisions"])
