"""``workflow.adaround_precision`` and ``workflow.qat_profile`` of the experiment file are honoured by ``sweeper run
--adaround --qat``: AdaRound runs at the configured precision and QAT trains the configured profile, not the
ones the workflow's rules would pick (the failing weight precision w4a8, the cheapest failing candidate w2a8).
``workflow.adaround_iterations`` and ``qat.epochs`` are honoured too, and the flags turn on steps the file leaves
off.

The model is a small PyTorch MLP written here (QAT needs a PyTorch model) whose second layer has one huge weight
per output channel on an input that is always zero: harmless in FP32, it sets every per-channel scale, so at 4
and 2 bits the small weights round away and those candidates fail (the weights are the sensitive part, so Step
4 runs); a latency budget nothing meets sends the workflow on to Step 3. In process on the local pool, no
MLflow: about 10 s."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytestmark = [pytest.mark.e2e, pytest.mark.slow]
MODULE = "sweeper_e2e_fragile_mlp"
MODEL_CODE = '''
import numpy as np


def make_model():
    """16 -> 16 -> Relu -> 16 -> Relu -> 4; unit 0 of the first layer is dead (bias -1000), and every output of
    the second layer reads it with weight 4.0."""
    import torch

    rng = np.random.default_rng(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.ReLU(),
                              torch.nn.Linear(16, 4))
    w1, w2, w3 = (rng.standard_normal(s) * 0.3 for s in ((16, 16), (16, 16), (4, 16)))
    b1 = np.zeros(16)
    b1[0] = -1000.0
    w2[:, 0] = 4.0
    with torch.no_grad():
        for layer, w, b in ((net[0], w1, b1), (net[2], w2, np.zeros(16)), (net[4], w3, np.zeros(4))):
            layer.weight.copy_(torch.tensor(w, dtype=torch.float32))
            layer.bias.copy_(torch.tensor(b, dtype=torch.float32))
    net.eval()
    return net, torch.zeros(1, 16)
'''


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _setup(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import importlib

    import torch

    (tmp / f"{MODULE}.py").write_text(MODEL_CODE)
    monkeypatch.syspath_prepend(str(tmp))
    importlib.invalidate_caches()
    net, _ = importlib.import_module(MODULE).make_model()
    x = np.random.default_rng(1).standard_normal((256, 16)).astype(np.float32)
    with torch.no_grad():
        labels = net(torch.tensor(x)).argmax(1).numpy().astype(np.int64)  # FP32 top-1 is 1.0
    np.savez(tmp / "data.npz", input=x, labels=labels)
    exp = tmp / "exp.yaml"
    exp.write_text(f"""name: workflow_settings
model:
  torch: {MODULE}:make_model
data:
  calibration: data.npz
  evaluation: data.npz
metric: top1
target:
  max_drop: 0.02
candidates: [w8a8, w4a8, w2a8]
pool: local
workers: 1
output: {tmp / 'out'}
workflow:
  latency_budget_ms: 1.0e-9
  adaround: false
  adaround_precision: w2a8
  adaround_iterations: 20
  qat: false
  qat_profile: w4a8
qat:
  epochs: 1
""")
    return exp


def test_run_honours_adaround_precision_and_qat_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sweeper.cli import main

    exp = _setup(tmp_path, monkeypatch)
    assert main(["run", str(exp), "--adaround", "--qat", "--no-tracking"]) == 0
    out = tmp_path / "out"
    flow = _json(out / "workflow.json")
    base = {r["name"]: r for r in _json(out / "baseline" / "results.json")["results"]}
    # the rules alone would AdaRound at w4a8 (every 4-bit-weight candidate fails) and train w2a8 (the cheapest
    # candidate that failed Step 1)
    assert not base["w4a8"]["meets_target"] and not base["w2a8"]["meets_target"] and base["w8a8"]["meets_target"]
    steps = [s["step"] for s in flow["steps"]]
    assert steps[:5] == ["baseline", "litemp", "amp", "adaround", "qat"], flow["decisions"]
    assert "Step 4: weights are the sensitive part (w4a8 fails): AdaRound at w2a8" in flow["decisions"]
    assert "Step 5: QAT of w4a8" in flow["decisions"]

    ada = _json(out / "adaround" / "results.json")
    assert ada["precision"] == "w2a8" and ada["iterations"] == 20
    assert ada["metric_before"] == base["w2a8"]["metric"]  # nearest rounding at w2a8: Step 1's w2a8
    ada_enc = _json(Path(ada["encodings"]))
    assert {e["bw"] for e in ada_enc["param_encodings"]} == {2}
    assert {e["bw"] for e in ada_enc["activation_encodings"]} == {8}

    qat = _json(out / "qat" / "results.json")
    assert qat["profile"] == "w4a8" and set(qat["assignment"].values()) == {"w4a8"} and qat["epochs"] == 1
    assert qat["metric_before"] == base["w4a8"]["metric"]  # it started from Step 1's w4a8
    qat_enc = _json(Path(qat["encodings"]))
    assert {e["bw"] for e in qat_enc["param_encodings"]} == {4}
    assert {e["bw"] for e in qat_enc["activation_encodings"]} == {8}
