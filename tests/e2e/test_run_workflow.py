"""`sweeper run` (the README's first command): Step 1 then greedy AMP on one pool, with a recommendation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def test_run_prints_step1_and_recommends_a_profile(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "sweeper", "run", str(ROOT / "experiments" / "mnist_cnn.yaml"),
                          "--output", str(tmp_path / "out"), "--no-tracking"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Step 1 - baseline precision" in res.stdout and "Step 3 - AMP" in res.stdout
    assert "recommended:" in res.stdout
    base = json.loads((tmp_path / "out" / "baseline" / "results.json").read_text())
    amp = json.loads((tmp_path / "out" / "amp" / "results.json").read_text())
    chosen = next(r for r in base["results"] if r["name"] == base["chosen"])
    assert amp["accepted"]["drop"] <= 0.005
    assert amp["accepted"]["bops_ratio"] <= chosen["bops_ratio"]  # AMP never does worse than Step 1's pick
    assert Path(amp["accepted"]["onnx"]).is_file()
