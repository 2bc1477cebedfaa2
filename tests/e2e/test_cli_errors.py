"""Bad input through the real CLI: one line naming the file/field, exit code 2, no traceback, no output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import cnn_model


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sweeper", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def _setup(tmp: Path, *, model: str = "model.onnx", data: dict[str, np.ndarray] | None = None,
           metric: str = "top1", extra: str = "") -> Path:
    onnx.save(cnn_model(), str(tmp / "model.onnx"))
    if data is None:
        rng = np.random.default_rng(0)
        data = {"x": rng.standard_normal((8, 1, 8, 8)).astype(np.float32), "labels": np.arange(8) % 10}
    np.savez(tmp / "data.npz", **data)
    exp = tmp / "exp.yaml"
    exp.write_text(f"""name: tiny
model:
  onnx: {model}
data:
  calibration: data.npz
  evaluation: data.npz
metric: {metric}
target:
  max_drop: 0.01
candidates: [w8a8]
pool: local
output: {tmp / 'out'}
{extra}""")
    return exp


def _assert_clean_failure(res: subprocess.CompletedProcess[str], tmp: Path, *phrases: str) -> None:
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.startswith("sweeper: error:")]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    for p in phrases:
        assert p in lines[0], lines[0]
    assert not (tmp / "out").exists()


def test_missing_model_file(tmp_path: Path) -> None:
    exp = _setup(tmp_path, model="nope.onnx")
    _assert_clean_failure(_run(["baseline", str(exp), "--no-tracking"], tmp_path), tmp_path, "model.onnx",
                          "nope.onnx")


def test_file_that_is_not_onnx(tmp_path: Path) -> None:
    exp = _setup(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"this is not a protobuf \x00\xff" * 10)
    _assert_clean_failure(_run(["baseline", str(exp), "--no-tracking"], tmp_path), tmp_path, "not an ONNX model")


def test_onnx_that_fails_the_checker(tmp_path: Path) -> None:
    exp = _setup(tmp_path)
    bad = cnn_model()
    bad.graph.node[0].input[1] = "no_such_weight"
    onnx.save(bad, str(tmp_path / "model.onnx"))
    _assert_clean_failure(_run(["baseline", str(exp), "--no-tracking"], tmp_path), tmp_path, "ONNX checker")


@pytest.mark.parametrize("data,phrase", [
    ({"y": np.zeros((4, 1, 8, 8), np.float32), "labels": np.zeros(4, np.int64)}, "input 'x' missing"),
    ({"x": np.zeros((4, 1, 9, 8), np.float32), "labels": np.zeros(4, np.int64)}, "shape"),
    ({"x": np.zeros((4, 1, 8, 8), np.float64), "labels": np.zeros(4, np.int64)}, "dtype"),
    ({"x": np.zeros((4, 1, 8, 8), np.float32)}, "labels missing"),
])
def test_bad_npz(tmp_path: Path, data: dict[str, np.ndarray], phrase: str) -> None:
    exp = _setup(tmp_path, data=data)
    res = _run(["baseline", str(exp), "--no-tracking"], tmp_path)
    _assert_clean_failure(res, tmp_path, "data.calibration" if phrase != "labels missing" else "data.evaluation",
                          phrase)


def test_unknown_precision_and_bad_drop(tmp_path: Path) -> None:
    exp = _setup(tmp_path)
    exp.write_text(exp.read_text().replace("[w8a8]", "[w8a8, w5a8]"))
    _assert_clean_failure(_run(["baseline", str(exp)], tmp_path), tmp_path, "candidates[1]", "w5a8")
    exp = _setup(tmp_path)
    exp.write_text(exp.read_text().replace("max_drop: 0.01", "max_drop: -1"))
    _assert_clean_failure(_run(["baseline", str(exp)], tmp_path), tmp_path, "target.max_drop")


def test_unresolvable_evaluator(tmp_path: Path) -> None:
    exp = _setup(tmp_path, metric="no_such_pkg.metrics:acc")
    _assert_clean_failure(_run(["baseline", str(exp)], tmp_path), tmp_path, "metric", "no_such_pkg")
