"""The README's Python example runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.smoke]


def test_readme_python_example_runs_as_written(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- readme-example -->\s*```python\n(.*?)```\s*<!-- /readme-example -->", text, re.S)
    assert block, "the README's Python example is missing its markers"
    res = subprocess.run([sys.executable, "-c", block.group(1)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Step 1 chose" in res.stdout and "AMP accepted" in res.stdout
    assert (tmp_path / "runs" / "vad" / "baseline" / "results.json").is_file()
    assert (tmp_path / "runs" / "vad" / "w8a8.onnx").is_file()
