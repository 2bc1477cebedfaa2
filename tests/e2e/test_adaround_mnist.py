"""End to end on the real example: `sweeper adaround` on the MNIST CNN, then a step on the AdaRounded weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = ROOT / "experiments" / "mnist_cnn.yaml"
pytestmark = pytest.mark.e2e


def adaround_cli(out: Path, precision: str, iterations: int) -> tuple[dict, subprocess.CompletedProcess[str]]:
    res = subprocess.run(
        [sys.executable, "-m", "sweeper", "adaround", str(EXPERIMENT), "--precision", precision, "--iterations",
         str(iterations), "--pool", "local", "--workers", "1", "--no-tracking", "--output", str(out)],
        cwd=out.parent, capture_output=True, text=True, timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((out / "adaround" / "results.json").read_text()), res


@pytest.fixture(scope="module")
def w2a8(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, subprocess.CompletedProcess[str]]:
    work = tmp_path_factory.mktemp("adaround")
    doc, res = adaround_cli(work / "out", "w2a8", 1000)
    return work, doc, res


def test_w2a8_recovers(w2a8) -> None:  # noqa: ANN001
    work, doc, res = w2a8
    assert doc["precision"] == "w2a8" and doc["iterations"] == 1000
    assert doc["metric_before"] == pytest.approx(1350 / 1541, abs=0.003)  # nearest: 87.6 % (AIMET 87.61 %)
    assert doc["metric_after"] >= 0.937  # AIMET-ONNX 2.42: 93.96 %
    # AdaRound itself, not the keep-the-better rule: its rounding scores 6.5 points above nearest's (measured:
    # 87.61 % -> 94.09 %), and every layer learned integers other than nearest's that reconstruct better
    assert doc["metric_after"] - doc["metric_before"] >= 0.05
    assert doc["kept"] == "adaround" and doc["metric_kept"] == doc["metric_after"]
    assert len(doc["layers"]) == 5 and all(r["mse_adaround"] < r["mse_nearest"] for r in doc["layers"])
    assert all(r["kept"] == "adaround" and r["changed"] > 0 for r in doc["layers"])
    folder = work / "out" / "adaround"
    assert doc["onnx"] == str(folder / "adaround.onnx") and Path(doc["encodings"]).is_file()
    assert Path(doc["exports"]["nearest"]["onnx"]).is_file() and Path(doc["rounding"]).is_file()
    assert "AdaRound kept" in res.stdout and not list((work / "out").glob(".*staging*"))


def test_exported_model_is_the_adarounded_one(w2a8) -> None:  # noqa: ANN001

    from sweeper.examples import mnist
    from sweeper.model.session import reference_session
    from sweeper.techniques.adaround.rounding_file import load_rounding

    _, doc, _ = w2a8
    rounding = load_rounding(Path(doc["rounding"]).parent)
    assert {bits for _, bits in rounding} == {2} and len(rounding) == 5
    # the two exports differ in the weights' integers alone (same encodings), by the integers AdaRound changed
    ada, near = (_initializers(doc["exports"][w]["onnx"]) for w in ("adaround", "nearest"))
    assert set(ada) == set(near)
    differ = {k: int(np.count_nonzero(ada[k] != near[k])) for k in ada if not np.array_equal(ada[k], near[k])}
    assert differ == {f"{r['weight']}_quantized": r["changed"] for r in doc["layers"]}
    data = mnist.evaluation_data()
    for which, metric in (("adaround", doc["metric_after"]), ("nearest", doc["metric_before"])):
        sess = reference_session(doc["exports"][which]["onnx"], 1)
        logits = np.concatenate([sess.run(None, {"input": data["input"][i:i + 256]})[0]
                                 for i in range(0, len(data["labels"]), 256)])
        assert (logits.argmax(1) == data["labels"]).mean() == pytest.approx(metric, abs=1e-9)  # export = sim


def test_later_steps_run_on_the_adarounded_weights(w2a8, tmp_path: Path) -> None:  # noqa: ANN001
    from sweeper.api import Session
    from sweeper.quant.profile import Profile
    from sweeper.search.step import PoolNeeds

    work, doc, _ = w2a8
    exp = tmp_path / "mnist_rounded.yaml"
    exp.write_text(EXPERIMENT.read_text().replace("output: ../runs/mnist_cnn", f"output: {tmp_path / 'out'}")
                   + f"rounding: {Path(doc['rounding']).parent}\n")
    with Session(exp, tracking=False, pool="local", workers=1) as s:
        assert {b for _, b in s.ws.table.rounding} == {2} and s.ws.fingerprint["rounding_source"]
        profile = Profile.uniform([g.name for g in s.ws.graph.groups], "w2a8")
        res = next(iter(s.pool(PoolNeeds()).map_unordered([profile])))
    assert res.metric == pytest.approx(doc["metric_after"])  # the workers hold the learned integers


def test_w4a8_is_not_made_worse(tmp_path: Path) -> None:
    """At w4a8 (100 iterations) AdaRound learns other integers that reconstruct four of the five layers better
    but evaluate worse (measured: nearest 94.42 %, AdaRound 93.84 %; AIMET's is worse at w4a8 too): the step
    keeps nearest rounding, exports it, and later steps get no learned integers."""
    from sweeper.techniques.adaround.rounding_file import load_rounding

    doc, res = adaround_cli(tmp_path / "out", "w4a8", 100)
    assert doc["metric_before"] == pytest.approx(0.9442, abs=0.003)
    assert doc["metric_after"] < doc["metric_before"] - 0.002  # AdaRound did change the model, for the worse
    assert sum(r["kept"] == "adaround" for r in doc["layers"]) >= 3
    assert all(r["changed"] > 0 for r in doc["layers"] if r["kept"] == "adaround")
    assert doc["kept"] == "nearest" and doc["metric_kept"] == doc["metric_before"]  # never below nearest
    assert doc["onnx"] == doc["exports"]["nearest"]["onnx"] and "nearest kept" in res.stdout
    folder = tmp_path / "out" / "adaround"
    assert load_rounding(folder) == {}  # the experiment's rounding key would change nothing
    learned = load_rounding(folder, learned=True)  # what AdaRound learned is kept for a look
    assert len(learned) == sum(r["kept"] == "adaround" for r in doc["layers"])


def _initializers(path: str) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer}
