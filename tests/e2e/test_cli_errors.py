"""Bad input through the real CLI: one line naming the file/field/option, exit code 2, no traceback, no output."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import cnn_model


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``sweeper ARGS`` run in this process (``sweeper.cli.main``, as the console script calls it), in ``cwd``:
    exit code, stdout and stderr as a subprocess would give them, at no interpreter start."""
    from sweeper.cli import main

    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as exc:  # argparse's errors and --help
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    finally:
        os.chdir(old)
    return subprocess.CompletedProcess(["sweeper", *args], code, out.getvalue(), err.getvalue())


def _run_process(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m sweeper ARGS`` as a real process: a few cases check that the process itself exits cleanly."""
    return subprocess.run([sys.executable, "-m", "sweeper", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=None if env is None else {**os.environ, **env})


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
    _assert_clean_failure(_run_process(["baseline", str(exp), "--no-tracking"], tmp_path), tmp_path, "model.onnx",
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


# --- every CLI option: one line, exit 2, nothing written (issue 13, item 1) -----------------------------------


@pytest.mark.parametrize(("args", "phrases"), [
    (["--workers", "-1"], ["--workers", "'-1'", "whole number >= 1"]),  # used to hang in Ray
    (["--workers", "0"], ["--workers", "'0'", "whole number >= 1"]),  # used to be ignored
    (["--workers", "two"], ["--workers", "'two'"]),
    (["--max-drop", "-0.1"], ["--max-drop", "number >= 0"]),
    (["--max-drop", "nan"], ["--max-drop", "'nan'"]),
    (["--pool", "k8s"], ["--pool", "'k8s'", "'ray', 'local'"]),
    (["--address", "127.0.0.1:1", "--pool", "ray"], ["--address", "no Ray head answers at 127.0.0.1:1"]),
    (["--address", "nohost"], ["--address", "'nohost'", "HOST:PORT"]),
    (["--address", "127.0.0.1:1", "--pool", "local"], ["--address", "--pool local"]),
])
def test_bad_option_values(tmp_path: Path, args: list[str], phrases: list[str]) -> None:
    exp = _setup(tmp_path)
    run = _run_process if args[0] == "--workers" and args[1] == "-1" else _run  # argparse's exit, as a process
    _assert_clean_failure(run(["baseline", str(exp), *args], tmp_path), tmp_path, *phrases)
    assert not (tmp_path / "study.db").exists()


def test_output_option_that_is_a_file(tmp_path: Path) -> None:
    exp = _setup(tmp_path)
    (tmp_path / "taken").write_text("x")
    _assert_clean_failure(_run(["baseline", str(exp), "--output", str(tmp_path / "taken")], tmp_path), tmp_path,
                          "--output", "is a file")


@pytest.mark.parametrize(("command", "args", "phrases"), [
    ("analyze", ["--rank", "best"], ["--rank", "'best'", "'enable_one', 'disable_one', 'sqnr'"]),
    ("litemp", ["--rank", "best"], ["--rank", "'best'"]),
    ("amp", ["--algorithm", "random"], ["--algorithm", "'greedy', 'fast', 'auto', 'optuna', 'greedy+optuna', 'fast+optuna'"]),
    ("amp", ["--cost", "time"], ["--cost", "'bops', 'bytes', 'latency'"]),
    ("amp", ["--objective", "single"], ["--objective", "'multi', 'constrained'"]),
    ("amp", ["--trials", "0"], ["--trials", "whole number >= 1"]),
    ("amp", ["--timeout", "-5"], ["--timeout", "number > 0"]),
    ("amp", ["--candidates", "w8a8"], ["--candidates", "at least two"]),
    ("litemp", ["--k", "5,200"], ["--k", "between 0 and 100"]),
    ("litemp", ["--k", "5,nan"], ["--k", "between 0 and 100"]),
    ("run", ["--latency-budget", "nan"], ["--latency-budget", "'nan'", "milliseconds > 0"]),
    ("run", ["--latency-budget", "inf"], ["--latency-budget", "'inf'", "milliseconds > 0"]),
    ("run", ["--latency-budget", "0"], ["--latency-budget", "'0'", "milliseconds > 0"]),
    ("amp", ["--timeout", "inf"], ["--timeout", "'inf'"]),
    ("qat", ["--lr", "nan"], ["--lr", "'nan'", "number > 0"]),
    ("qat", ["--epochs", "0"], ["--epochs", "whole number >= 1"]),
    ("adaround", ["--iterations", "0"], ["--iterations", "whole number >= 1"]),
    ("adaround", ["--precision", "w5a8"], ["--precision", "w5a8"]),
    ("analyze", ["--base", "w5a8"], ["--precision", "w5a8"]),  # --base: the older name of --precision
    ("litemp", ["--precision", "w8a8", "--high", "w5a16"], ["--high", "w5a16"]),
])
def test_bad_step_options(tmp_path: Path, command: str, args: list[str], phrases: list[str]) -> None:
    exp = _setup(tmp_path)
    _assert_clean_failure(_run([command, str(exp), *args], tmp_path), tmp_path, *phrases)


@pytest.mark.parametrize(("command", "listed"), [
    ("analyze", "{enable_one,disable_one,sqnr,noise}"), ("litemp", "{enable_one,disable_one,sqnr,noise}"),
    ("amp", "{greedy,fast,auto,optuna,greedy+optuna,fast+optuna}"), ("amp", "{bops,bytes,latency}"), ("amp", "{multi,constrained}"),
])
def test_help_lists_the_allowed_values(tmp_path: Path, command: str, listed: str) -> None:
    res = _run([command, "--help"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert listed in res.stdout


@pytest.mark.parametrize(("args", "option"), [
    (["--pool", "ray"], "--pool"), (["--fresh"], "--fresh"), (["--max-drop", "0.1"], "--max-drop"),
    (["--workers", "2"], "--workers"), (["--no-tracking"], "--no-tracking"), (["--output", "x"], "--output"),
])
def test_export_rejects_the_options_it_would_ignore(tmp_path: Path, args: list[str], option: str) -> None:
    exp = _setup(tmp_path)
    res = _run(["export", str(exp), "--precision", "w8a8", "--out", str(tmp_path / "m.onnx"), *args], tmp_path)
    _assert_clean_failure(res, tmp_path, option, "not an option of export")
    assert not (tmp_path / "m.onnx").exists()


def _good_encodings(tmp: Path, exp: Path) -> dict:
    res = _run(["export", str(exp), "--precision", "w8a8", "--out", str(tmp / "good.onnx")], tmp)
    assert res.returncode == 0, res.stderr
    assert "reproduces the simulation bit for bit under" in res.stdout  # the session options, named
    return json.loads((tmp / "good.encodings").read_text())


def _without_dtype(doc: dict) -> dict:
    del doc["activation_encodings"][0]["dtype"]
    return doc


def _renamed(doc: dict) -> dict:
    for section in ("activation_encodings", "param_encodings"):
        for e in doc[section]:
            e["name"] = "other_" + e["name"]
    return doc


def _two_channels(doc: dict) -> dict:
    w1 = next(e for e in doc["param_encodings"] if e["name"] == "w1")
    w1["scale"], w1["offset"] = w1["scale"][:2], w1["offset"][:2]
    return doc


@pytest.mark.parametrize(("edit", "phrases"), [
    (None, ["--encodings", "missing.encodings", "not found"]),
    (_without_dtype, ["--encodings", "activation_encodings[0] ('x')", "'dtype'"]),
    (_renamed, ["--encodings", "none of its 8 encodings names a quantized tensor"]),
    (_two_channels, ["--encodings", "'w1' has 2 scales: expected 4"]),
])
def test_export_of_bad_encodings(tmp_path: Path, edit, phrases: list[str]) -> None:  # noqa: ANN001
    exp = _setup(tmp_path)
    name = "missing.encodings"
    if edit is not None:
        name = "bad.encodings"
        (tmp_path / name).write_text(json.dumps(edit(_good_encodings(tmp_path, exp))))
    res = _run(["export", str(exp), "--encodings", str(tmp_path / name), "--out", str(tmp_path / "m.onnx")], tmp_path)
    _assert_clean_failure(res, tmp_path, *phrases)
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m.encodings").exists()


def test_export_out_must_be_an_onnx_path(tmp_path: Path) -> None:
    exp = _setup(tmp_path)
    res = _run(["export", str(exp), "--precision", "w8a8", "--out", str(tmp_path / "m.txt")], tmp_path)
    _assert_clean_failure(res, tmp_path, "--out", "ending in .onnx")
    assert not (tmp_path / "m.txt").exists() and not (tmp_path / "m.encodings").exists()


@pytest.mark.parametrize(("extra", "env", "phrases"), [
    ("tracking:\n  uri: justapath\n", {}, ["tracking.uri", "'justapath'"]),
    ("tracking:\n  uri: nonsense://x\n", {}, ["tracking.uri", "'nonsense://x'"]),
    ("", {"MLFLOW_TRACKING_URI": "http://127.0.0.1:1"}, ["tracking store http://127.0.0.1:1", "no MLflow server"]),
    ("", {"MLFLOW_TRACKING_URI": "ftp://host/x"}, ["MLFLOW_TRACKING_URI", "'ftp://host/x'"]),
])
def test_bad_tracking_store(tmp_path: Path, extra: str, env: dict[str, str], phrases: list[str]) -> None:
    exp = _setup(tmp_path, extra=extra)
    res = _run_process(["baseline", str(exp)], tmp_path, env)
    _assert_clean_failure(res, tmp_path, *phrases)
    assert not (tmp_path / "study.db").exists() and not list(tmp_path.glob("mlflow*"))


def test_ui_rejects_a_busy_port_and_a_bad_store(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        _assert_clean_failure(_run(["ui", "--port", str(port)], tmp_path), tmp_path, "--port", str(port), "not free")
    _assert_clean_failure(_run(["ui", "--uri", "nonsense"], tmp_path), tmp_path, "--uri", "'nonsense'")
    _assert_clean_failure(_run(["ui", "--port", "0"], tmp_path), tmp_path, "--port", "between 1 and 65535")
    assert not list(tmp_path.glob("mlflow*"))
