"""The Python API and the experiment file default to the same settings (one definition: sweeper.config.spec)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from conftest import cnn_model

import sweeper


def test_api_and_file_defaults_agree(tmp_path: Path) -> None:
    onnx.save(cnn_model(), str(tmp_path / "model.onnx"))
    np.savez(tmp_path / "data.npz", x=np.zeros((4, 1, 8, 8), np.float32), labels=np.zeros(4, np.int64))
    (tmp_path / "exp.yaml").write_text("name: tiny\nmodel:\n  onnx: model.onnx\ndata:\n  calibration: data.npz\n  evaluation: data.npz\n"
                                       "target:\n  max_drop: 0.01\n"
                                       "metric: top1\n")
    from_file = sweeper.load_experiment(tmp_path / "exp.yaml")
    from_code = sweeper.experiment("tiny", model=tmp_path / "model.onnx", calibration={"x": np.zeros((4, 1, 8, 8))})
    for field in ("pool", "workers", "threads_per_worker", "batch_size", "candidates", "calibration",
                  "cost_target", "reuse_memory_mb", "higher_is_better"):
        assert getattr(from_code, field) == getattr(from_file, field), field
    assert (from_code.pool, from_code.workers) == ("ray", 2)
