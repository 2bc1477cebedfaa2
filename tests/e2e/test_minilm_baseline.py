"""End to end on a real transformer: all-MiniLM-L6-v2 (masking sentinels in its attention)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def test_minilm_baseline_keeps_cosine_and_export_runs(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "sweeper", "baseline", str(ROOT / "experiments" / "minilm.yaml"),
         "--output", str(tmp_path / "out"), "--no-tracking"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads((tmp_path / "out" / "baseline" / "results.json").read_text())
    rows = {r["name"]: r for r in doc["results"]}
    assert rows["w8a16"]["metric"] >= 0.99  # AIMET-ONNX 2.42: 0.41; ORT quantize_static int8: 0.40
    assert rows["fp16"]["metric"] >= 0.999
    # the attention-mask sentinels were found and handled
    handled = doc["sentinels"]
    assert any("Where" in k for k in handled) and sum("attention/self/Add" in k for k in handled) == 6
    # the exported QDQ model runs in plain onnxruntime and keeps the cosine
    from sweeper.examples import minilm

    data = minilm.evaluation_data()
    fp32 = ort.InferenceSession(minilm.model_path(), providers=["CPUExecutionProvider"])
    qdq = ort.InferenceSession(rows["w8a16"]["onnx"], providers=["CPUExecutionProvider"])
    ref = fp32.run(None, data)[0]
    out = qdq.run(None, data)[0]
    cos = np.sum(ref * out, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1))
    assert cos.mean() >= 0.99
    assert abs(cos.mean() - rows["w8a16"]["metric"]) < 0.002
