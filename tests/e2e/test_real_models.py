"""End to end on the real-model suite (``sweeper.examples.real``): pretrained ONNX models from PyPI wheels and
small models trained here, each through ``sweeper baseline`` at every default candidate.

What issue 8 asks of every model: Step 1 at every default candidate; w16a16 within 0.5 % of FP32; on the
BatchNorm-folded CNNs w16a16 at least as good as w8a16; the exported QDQ model of every precision scores
exactly the simulation's metric in plain ONNX Runtime (under the session options it names), its outputs bit
for bit, float groups included; and a changed model at the same path is evaluated again on a rerun (the
study fingerprint is the model's content, not its path).
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from onnx import numpy_helper

from sweeper.examples.real import SUITE, SuiteModel
from sweeper.model.session import reference_session
from sweeper.quant.precision import DEFAULT_CANDIDATES

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e
BY_NAME = {m.name: m for m in SUITE}
W16_VS_W8_TOLERANCE = 0.005  # "at least as good as w8a16", up to about one sample of the evaluation sets


def _baseline(experiment: Path, out: Path, cwd: Path) -> dict[str, Any]:
    """``sweeper baseline`` on the local pool without tracking; the results.json it wrote."""
    res = subprocess.run(
        [sys.executable, "-m", "sweeper", "baseline", str(experiment), "--output", str(out), "--pool", "local",
         "--no-tracking"],
        cwd=cwd, capture_output=True, text=True, timeout=900,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "fp32" in res.stdout
    return json.loads((out / "baseline" / "results.json").read_text())


def _session(path: str | Path) -> ort.InferenceSession:
    """Plain ONNX Runtime, one thread, with the session options the export names for sim = export (no Q/DQ
    fusion; NCHWc layout kernels or optimizations off, as its simulation ran)."""
    return reference_session(str(path), 1)


def _metric(experiment: Path) -> Callable[[Callable[..., list[np.ndarray]], dict[str, np.ndarray]], float]:
    """The experiment's metric as ``fn(run, data)``: its user function, or top-1 in its batches."""
    doc = yaml.safe_load(experiment.read_text())
    if doc["metric"] != "top1":
        module, _, fn = doc["metric"].partition(":")
        return getattr(importlib.import_module(module), fn)
    batch = int(doc["batch_size"])

    def top1(run: Callable[..., list[np.ndarray]], data: dict[str, np.ndarray]) -> float:
        inputs = [k for k in data if k != "labels"]
        n = len(data["labels"])
        pred = np.concatenate([np.argmax(run({k: data[k][i:i + batch] for k in inputs})[0], axis=-1)
                               for i in range(0, n, batch)])
        return float(np.count_nonzero(pred == data["labels"])) / n

    return top1


def _score(model_path: str | Path, suite: SuiteModel, experiment: Path, samples: int | None = None) -> float:
    """The exported model's metric on the evaluation data (its first ``samples`` samples: where a simulated
    evaluation stopped early, sweeper.eval.early)."""
    sess = _session(model_path)
    data = importlib.import_module(suite.module).evaluation_data()
    if samples is not None:
        data = {k: v[:samples] for k, v in data.items()}
    return _metric(experiment)(lambda feeds: sess.run(None, feeds), data)


SMOKE_MODEL = "real_textcls"  # the fast tier's real pretrained model (bash scripts/test.sh)


@pytest.fixture(scope="module", params=[pytest.param(m.name, marks=pytest.mark.smoke) if m.name == SMOKE_MODEL
                                        else m.name for m in SUITE])
def step1(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[SuiteModel, Path, dict[str, Any]]:
    suite = BY_NAME[request.param]
    work = tmp_path_factory.mktemp(suite.name)
    experiment = ROOT / "experiments" / f"{suite.name}.yaml"
    return suite, experiment, _baseline(experiment, work / "out", work)


def test_step1_at_every_default_candidate(step1) -> None:  # noqa: ANN001
    suite, _, doc = step1
    rows = {r["name"]: r for r in doc["results"]}
    assert set(rows) == set(DEFAULT_CANDIDATES)
    assert doc["fp32_metric"] >= suite.fp32_floor, doc["fp32_metric"]
    for r in rows.values():
        assert np.isfinite(r["metric"]) and not r["resumed"]
        assert Path(r["onnx"]).is_file() and Path(r["encodings"]).is_file()


def test_w16a16_within_half_a_percent_of_fp32(step1) -> None:  # noqa: ANN001
    _, _, doc = step1
    fp32 = doc["fp32_metric"]
    w16 = {r["name"]: r for r in doc["results"]}["w16a16"]["metric"]
    assert abs(w16 - fp32) <= 0.005 * abs(fp32), f"w16a16 {w16:.4f} vs FP32 {fp32:.4f}"


def test_w16a16_not_worse_than_w8a16_on_batchnorm_cnns(step1) -> None:  # noqa: ANN001
    suite, _, doc = step1
    if not suite.batchnorm_cnn:
        pytest.skip(f"{suite.name} is not a BatchNorm-folded CNN")
    rows = {r["name"]: r["metric"] for r in doc["results"]}
    assert rows["w16a16"] >= rows["w8a16"] - W16_VS_W8_TOLERANCE, f"w16a16 {rows['w16a16']:.4f} vs w8a16 {rows['w8a16']:.4f}"


def test_exported_qdq_reproduces_the_simulation(step1) -> None:  # noqa: ANN001
    suite, experiment, doc = step1
    mismatched = {}
    for r in doc["results"]:  # a candidate stopped early is compared on the samples it ran
        exported = _score(r["onnx"], suite, experiment, r["samples_evaluated"] if r["stopped_early"] else None)
        if exported != r["metric"]:
            mismatched[r["name"]] = (r["metric"], exported)
    assert not mismatched, f"simulation vs exported QDQ (ORT, optimizations off): {mismatched}"


# ------------------------------------------------------------------------------- rerun after a change


def _rescaled(path: Path, factor: float) -> None:
    """Multiply every float weight tensor (rank >= 2, an initializer or a Constant node's value, as the
    Paddle exports store them) of the model at ``path`` by ``factor``, in place: what a retrained model
    written over the old file looks like to sweeper."""
    model = onnx.load(str(path))
    tensors = list(model.graph.initializer)
    tensors += [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    changed = 0
    for tensor in tensors:
        arr = numpy_helper.to_array(tensor)
        if arr.dtype == np.float32 and arr.ndim >= 2:
            tensor.CopyFrom(numpy_helper.from_array((arr * np.float32(factor)).astype(np.float32), tensor.name))
            changed += 1
    assert changed, f"{path} has no float weight tensor to change"
    onnx.save(model, str(path))


RERUN_SAMPLES = {"real_layout": 2}  # pages: the detector is the slowest model of the suite


# The fingerprint (a hash of the prepared model's content) works the same on every model; the 383-group
# detector, whose two preparations and Step-1 runs cost minutes, is left to the three smaller models.
RERUN_MODELS = [m.name for m in SUITE if m.name != "real_layout"]


@pytest.mark.parametrize("name", RERUN_MODELS)
def test_changed_model_at_the_same_path_is_evaluated_again(name: str, tmp_path: Path) -> None:
    suite = BY_NAME[name]
    module = importlib.import_module(suite.module)
    model = tmp_path / "model.onnx"
    shutil.copyfile(module.model_path(), model)
    n = RERUN_SAMPLES.get(name)
    for split in ("calibration", "evaluation"):
        data = getattr(module, f"{split}_data")()
        np.savez(tmp_path / f"{split}.npz", **{k: v[:n] for k, v in data.items()})
    doc = yaml.safe_load((ROOT / "experiments" / f"{name}.yaml").read_text())
    doc.update(model={"onnx": str(model)}, candidates=["w8a8"], output=str(tmp_path / "out"),
               data={"calibration": str(tmp_path / "calibration.npz"),
                     "evaluation": str(tmp_path / "evaluation.npz")})
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(yaml.safe_dump(doc))

    first = _baseline(experiment, tmp_path / "out", tmp_path)
    _rescaled(model, 0.7)
    second = _baseline(experiment, tmp_path / "out", tmp_path)

    row1, row2 = first["results"][0], second["results"][0]
    assert not row2["resumed"], "the rerun reused the metrics of the model that was overwritten"
    assert second["fp32_metric"] != first["fp32_metric"] or row2["metric"] != row1["metric"]
    # the FP32 figure of the rerun is the new file's, computed independently here (default optimizations)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    data = {k: v for k, v in np.load(tmp_path / "evaluation.npz").items()}
    metric = _metric(ROOT / "experiments" / f"{name}.yaml")
    assert second["fp32_metric"] == pytest.approx(metric(lambda feeds: sess.run(None, feeds), data), abs=1e-9)


EXACT_MODELS = [m.name for m in SUITE] + ["mnist_cnn", "minilm"]
EXPECTED_MODE = {"mnist_cnn": "layout", "real_layout": "layout"}  # the others: plain (sim.quantsim.sim_mode)


@pytest.mark.parametrize("name", EXACT_MODELS)
def test_simulation_is_bit_identical_to_the_export_with_float_groups(name: str) -> None:
    """Outputs, not just the metric, on one batch: every candidate, all-fp32, one group left float at a time
    (what the analyzer evaluates: ONNX Runtime may fuse what reads a Conv once no Q/DQ pair sits between,
    which is what decides a model's mode) and random mixes of float and quantized groups."""
    import random

    from sweeper.config.experiment import load_experiment
    from sweeper.export import export_qdq
    from sweeper.pipeline import Workspace
    from sweeper.quant.profile import Profile
    from sweeper.sim.quantsim import QuantSim

    ws = Workspace(load_experiment(ROOT / "experiments" / f"{name}.yaml"), threads=1)
    try:
        precs = ["fp32", *(c.name for c in ws.exp.candidates)]
        sim = QuantSim(ws.graph, ws.table, threads=1, precisions=precs)
        assert sim.mode == EXPECTED_MODE.get(name, "plain")
        groups = [g.name for g in ws.graph.groups]
        base = ws.exp.candidates[0].name
        rng = random.Random(0)
        profiles = [Profile.uniform(groups, p) for p in precs]
        profiles += [Profile.make({g: "fp32" if k == j else base for k, g in enumerate(groups)})
                     for j in sorted(rng.sample(range(len(groups)), min(6, len(groups))))]
        profiles += [Profile.make({g: rng.choice(precs) for g in groups}) for _ in range(2)]
        feeds = ws.sample_feeds(16)
        for profile in profiles:
            sim.apply(profile)
            want = sim.run(feeds)
            got = reference_session(export_qdq(ws.graph, ws.table, profile), 1).run(None, feeds)
            for a, b in zip(want, got, strict=True):
                np.testing.assert_array_equal(a, b, err_msg=f"{name}: {profile.label()}")
    finally:
        ws.close()
