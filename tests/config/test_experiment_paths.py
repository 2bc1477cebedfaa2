"""``output`` resolves relative to the experiment file (like model and data), and ``metric_output``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from sweeper.config import load_experiment
from sweeper.errors import SweeperError


def _write(folder: Path, extra: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(b"not checked at load time")
    np.savez(folder / "d.npz", x=np.zeros((2, 3), np.float32))
    doc = {"name": "t", "model": {"onnx": "model.onnx"}, "data": {"calibration": "d.npz", "evaluation": "d.npz"},
           "metric": "cosine", "target": {"max_drop": 0.01}, **extra}
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_output_is_relative_to_the_experiment_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "experiments", {"output": "../runs/t"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    exp = load_experiment(path)
    assert exp.output == (tmp_path / "runs" / "t").resolve()
    default = load_experiment(_write(tmp_path / "other", {}))
    assert default.output == (tmp_path / "other" / "runs" / "t").resolve()


def test_metric_output_is_read_and_must_be_a_string(tmp_path: Path) -> None:
    assert load_experiment(_write(tmp_path / "a", {"metric_output": "logits"})).metric_output == "logits"
    assert load_experiment(_write(tmp_path / "b", {})).metric_output is None
    with pytest.raises(SweeperError, match="metric_output"):
        load_experiment(_write(tmp_path / "c", {"metric_output": 3}))
