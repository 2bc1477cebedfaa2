"""load_experiment: one test per kind of mistake (exact ``where`` and a key phrase), plus a valid file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from sweeper.config import CalibrationSpec, DataSpec, Experiment, ModelSpec, load_experiment
from sweeper.errors import SweeperError
from sweeper.quant.precision import Precision


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An experiment folder with a (never loaded) model file and two .npz files; the cwd is tmp_path."""
    (tmp_path / "model.onnx").write_bytes(b"not loaded at config time")
    arrays = {"input": np.zeros((4, 3), np.float32), "labels": np.zeros(4, np.int64)}
    np.savez(tmp_path / "calib.npz", **arrays)
    np.savez(tmp_path / "eval.npz", **arrays)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def base() -> dict:
    return {
        "name": "mnist_cnn",
        "model": {"onnx": "model.onnx"},
        "data": {"calibration": "calib.npz", "evaluation": "eval.npz"},
        "metric": "top1",
        "target": {"max_drop": 0.005},
    }


def write(folder: Path, doc: dict | str) -> Path:
    path = folder / "exp.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def fails(path: Path) -> SweeperError:
    with pytest.raises(SweeperError) as info:
        load_experiment(path)
    err = info.value
    assert str(err) == f"{err.where}: {err.message}"
    assert "\n" not in str(err)
    return err


def test_valid_file_loads_with_defaults(folder: Path) -> None:
    path = write(folder, base())
    exp = load_experiment(path)
    assert isinstance(exp, Experiment)
    assert exp.name == "mnist_cnn"
    assert exp.path == path.resolve()
    assert exp.model == ModelSpec(onnx=(folder / "model.onnx").resolve(), torch=None)
    assert exp.data == DataSpec(str((folder / "calib.npz").resolve()), str((folder / "eval.npz").resolve()))
    assert exp.metric == "top1" and exp.higher_is_better is True
    assert exp.batch_size == 256
    assert exp.max_drop == 0.005
    assert [c.name for c in exp.candidates] == ["w8a8", "w8a16", "w16a16", "fp16", "w4a8", "w4a16"]
    assert all(isinstance(c, Precision) for c in exp.candidates)
    assert exp.calibration == CalibrationSpec("minmax", 99.99, None, False, True, True)
    assert (exp.workers, exp.pool, exp.threads_per_worker) == (2, "ray", 1)
    assert exp.reuse_memory_mb == 2048
    assert exp.output == (folder / "runs" / "mnist_cnn").resolve()
    assert not exp.output.exists()  # not created at load time
    assert exp.tracking_uri is None
    with pytest.raises(AttributeError):
        exp.name = "other"  # type: ignore[misc]


def test_valid_file_with_every_field(folder: Path) -> None:
    (folder / "user_metric_ok.py").write_text("def score(run, data):\n    return 1.0\n")
    os.makedirs(folder / "sub")
    doc = base() | {
        "model": {"torch": "pkg.module:factory"},
        "data": {"calibration": "pkg.data:calib", "evaluation": "eval.npz"},
        "metric": "user_metric_ok:score",
        "higher_is_better": False,
        "batch_size": 32,
        "target": {"max_drop": 1e-3},
        "candidates": ["w8a8", "FP16"],
        "calibration": {"scheme": "percentile", "percentile": 99.9, "samples": 64, "act_symmetric": True,
                        "weight_symmetric": False, "per_channel": False},
        "workers": 4, "pool": "local", "threads_per_worker": 2, "reuse_memory_mb": 0,
        "output": "sub/out/deeper",
        "tracking": {"uri": "sqlite:///other.db"},
    }
    exp = load_experiment(write(folder, doc))
    assert exp.model == ModelSpec(onnx=None, torch="pkg.module:factory")
    assert exp.data.calibration == "pkg.data:calib"
    assert exp.metric == "user_metric_ok:score" and exp.higher_is_better is False
    assert exp.candidates == (Precision.parse("w8a8"), Precision.parse("fp16"))
    assert exp.calibration == CalibrationSpec("percentile", 99.9, 64, True, False, False)
    assert (exp.workers, exp.pool, exp.threads_per_worker, exp.batch_size) == (4, "local", 2, 32)
    assert exp.reuse_memory_mb == 0
    assert exp.output == folder.resolve() / "sub" / "out" / "deeper"
    assert exp.tracking_uri == "sqlite:///other.db"


def test_scientific_notation_max_drop_is_a_number(folder: Path) -> None:
    text = yaml.safe_dump(base(), sort_keys=False).replace("max_drop: 0.005", "max_drop: 5e-3")
    assert load_experiment(write(folder, text)).max_drop == 0.005


def test_missing_model_file(folder: Path) -> None:
    path = write(folder, base() | {"model": {"onnx": "missing.onnx"}})
    err = fails(path)
    assert err.where == f"{path}: model.onnx"
    assert "model file not found" in err.message and "missing.onnx" in err.message


def test_unknown_precision(folder: Path) -> None:
    path = write(folder, base() | {"candidates": ["w8a8", "w3a8"]})
    err = fails(path)
    assert err.where == f"{path}: candidates[1]"
    assert "unknown precision 'w3a8'" in err.message and "fp16" in err.message


def test_negative_max_drop(folder: Path) -> None:
    path = write(folder, base() | {"target": {"max_drop": -0.01}})
    err = fails(path)
    assert err.where == f"{path}: target.max_drop"
    assert "negative" in err.message and "expected a number >= 0" in err.message


@pytest.mark.parametrize("value, shown", [("lots", "'lots' (a string)"), (True, "true (a boolean)")])
def test_non_numeric_max_drop(folder: Path, value: object, shown: str) -> None:
    path = write(folder, base() | {"target": {"max_drop": value}})
    err = fails(path)
    assert err.where == f"{path}: target.max_drop"
    assert f"found {shown}: expected a number >= 0" in err.message


def test_negative_reuse_memory(folder: Path) -> None:
    path = write(folder, base() | {"reuse_memory_mb": -1})
    err = fails(path)
    assert err.where == f"{path}: reuse_memory_mb"
    assert "found -1" in err.message and "expected an integer >= 0" in err.message


def test_unknown_metric(folder: Path) -> None:
    path = write(folder, base() | {"metric": "accuracy"})
    err = fails(path)
    assert err.where == f"{path}: metric"
    assert "unknown metric 'accuracy'" in err.message and "top1, cosine, sqnr" in err.message


def test_evaluator_import_path_does_not_resolve(folder: Path) -> None:
    path = write(folder, base() | {"metric": "no_such_pkg_sweeper_test.metrics:score"})
    err = fails(path)
    assert err.where == f"{path}: metric"
    assert "cannot import module 'no_such_pkg_sweeper_test.metrics'" in err.message


def test_evaluator_function_missing(folder: Path) -> None:
    (folder / "user_metric_nofn.py").write_text("def other(run, data):\n    return 1.0\n")
    path = write(folder, base() | {"metric": "user_metric_nofn:score"})
    err = fails(path)
    assert err.where == f"{path}: metric"
    assert "has no attribute 'score'" in err.message


def _read_only_dir(folder: Path) -> Path:
    ro = folder / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    return ro


def test_output_dir_that_cannot_be_created(folder: Path) -> None:
    """An output folder no user can create, root (as in CI) included: a regular file is on its path. Refused
    when the experiment is loaded, naming the field and the file in the way, and nothing is written."""
    blocker = folder / "runs"
    blocker.write_text("a file where the output folder's parent should be\n")
    with pytest.raises(NotADirectoryError):  # what creating it would meet, whoever runs this
        (blocker / "probe").mkdir(parents=True)
    path = write(folder, base() | {"output": "runs/new/mnist"})
    before = sorted(folder.rglob("*"))
    err = fails(path)
    assert err.where == f"{path}: output"
    assert err.message == (f"cannot create {blocker / 'new' / 'mnist'}: {blocker} is a file, expected a "
                           "directory")
    assert sorted(folder.rglob("*")) == before and blocker.is_file()  # nothing written, nothing replaced


def test_unwritable_output_dir_as_seen_by_os_access(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same check with os.access reporting the read-only directory as root cannot (runs as root too)."""
    ro = _read_only_dir(folder)
    real_access = os.access

    def access(p: os.PathLike[str] | str, mode: int, **kw: object) -> bool:
        if Path(p) == ro and mode & os.W_OK:
            return False
        return real_access(p, mode, **kw)  # type: ignore[arg-type]

    try:
        path = write(folder, base() | {"output": "readonly/new/runs"})
        monkeypatch.setattr(os, "access", access)
        err = fails(path)
        assert err.where == f"{path}: output"
        assert "is not writable" in err.message and str(ro) in err.message
        assert not (ro / "new").exists()
    finally:
        ro.chmod(0o755)


def test_unknown_key(folder: Path) -> None:
    path = write(folder, base() | {"calibration": {"scheme": "mse", "bins": 2048}})
    err = fails(path)
    assert err.where == f"{path}: calibration.bins"
    assert "unknown key 'bins'" in err.message and "scheme, percentile, samples" in err.message


def test_unknown_top_level_key(folder: Path) -> None:
    path = write(folder, base() | {"max_drop": 0.01})
    err = fails(path)
    assert err.where == f"{path}: max_drop"
    assert "unknown key 'max_drop'" in err.message and "target" in err.message


def test_both_onnx_and_torch(folder: Path) -> None:
    path = write(folder, base() | {"model": {"onnx": "model.onnx", "torch": "pkg.mod:make"}})
    err = fails(path)
    assert err.where == f"{path}: model"
    assert "found both onnx and torch" in err.message and "exactly one" in err.message


def test_npz_missing(folder: Path) -> None:
    path = write(folder, base() | {"data": {"calibration": "calib.npz", "evaluation": "nowhere.npz"}})
    err = fails(path)
    assert err.where == f"{path}: data.evaluation"
    assert "data file not found" in err.message and "nowhere.npz" in err.message


def test_file_not_found(folder: Path) -> None:
    err = fails(folder / "absent.yaml")
    assert err.where == str(folder / "absent.yaml")
    assert "experiment file not found" in err.message


def test_invalid_yaml_and_non_mapping(folder: Path) -> None:
    path = write(folder, "name: [unclosed\n")
    err = fails(path)
    assert err.where == str(path) and "not valid YAML" in err.message and "line" in err.message
    path = write(folder, "- just\n- a list\n")
    assert "expected a YAML mapping" in fails(path).message


def test_duplicate_key(folder: Path) -> None:
    text = yaml.safe_dump(base(), sort_keys=False) + "metric: cosine\n"
    err = fails(write(folder, text))
    assert err.where.endswith(": metric") and "appears twice" in err.message
