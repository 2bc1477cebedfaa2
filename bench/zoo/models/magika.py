"""Google's Magika file-type classifier (``standard_v3_3``, 214 content types) as shipped in the ``magika``
wheel: a JAX model taken through jax2tf and converted by tf2onnx (opset 15, ``ai.onnx.ml`` imported, tensor
names such as ``jax2tf_get_logits_/pjit_get_logits_/MagikaV2/ApplyActivation_1/Mul_2:0``), int32 input
``bytes`` ``[batch, 2048]`` (the first and last 1024 bytes of a file, whitespace-stripped, 256 pads). Some
activations reach ~5e5 (beyond float16).

Data: real files of this machine's Python (the standard library and the project's venv), chosen by extension
in sorted order; the label is the content type the extension names. Metric: top-1 against those labels.
"""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import numpy as np

from bench.zoo._util import package_file

INSTALL = "magika==1.0.3"
MODEL = "models/standard_v3_3/model.onnx"
BEG = END = 1024
BLOCK = 4096
PAD = 256
EXT_LABEL = {
    ".py": "python", ".pyi": "python", ".pyc": "pythonbytecode", ".c": "c", ".h": "c", ".cpp": "cpp", ".cc": "cpp",
    ".hpp": "cpp", ".rst": "rst", ".json": "json", ".gz": "gzip", ".so": "elf", ".txt": "txt", ".js": "javascript",
    ".md": "markdown", ".csv": "csv", ".png": "png", ".css": "css", ".toml": "toml", ".xml": "xml", ".svg": "svg",
    ".wav": "wav", ".npy": "npy", ".ttf": "ttf", ".pem": "pem", ".html": "html", ".yaml": "yaml", ".jinja": "jinja",
    ".woff": "woff", ".woff2": "woff2", ".bz2": "bzip", ".ini": "ini", ".f90": "fortran", ".cmake": "cmake",
    ".onnx": "onnx", ".pkl": "pickle", ".sh": "shell", ".zip": "zip", ".whl": "zip",
}
PER_EXT = 6  # files per extension (every k-th of the sorted list)


def features(path: Path) -> np.ndarray:
    """Magika's features of one file: int32 ``[2048]``."""
    data = path.read_bytes()
    beg, end = data[:BLOCK], data[-BLOCK:]
    if len(data) <= BLOCK:
        beg, end = beg.strip(), end.strip()
    else:
        beg, end = beg.lstrip(), end.rstrip()
    b = list(beg[:BEG]) + [PAD] * max(0, BEG - len(beg))
    e = [PAD] * max(0, END - len(end)) + list(end[-END:] if end else b"")
    return np.asarray(b + e, dtype=np.int32)


def _files() -> list[tuple[Path, str]]:
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    by_ext: dict[str, list[Path]] = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            ext = p.suffix.lower()
            if ext in EXT_LABEL and p.is_file() and not p.is_symlink() and p.stat().st_size > 64:
                by_ext.setdefault(ext, []).append(p)
    chosen = []
    for ext in sorted(by_ext):
        paths = by_ext[ext]
        step = max(1, len(paths) // PER_EXT)
        chosen += [(p, EXT_LABEL[ext]) for p in paths[::step][:PER_EXT]]
    return chosen


def build(cache_dir: Path) -> dict:
    model = package_file("magika", MODEL, INSTALL)
    labels_space = json.loads((model.parent / "config.min.json").read_text())["target_labels_space"]
    files = [(p, lab) for p, lab in _files() if lab in labels_space]
    x = np.stack([features(p) for p, _ in files])
    y = np.asarray([labels_space.index(lab) for _, lab in files], np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    cal, ev = order[: len(x) // 4], order[len(x) // 4:]
    return dict(model=str(model), calibration={"bytes": x[cal]}, evaluation={"bytes": x[ev], "labels": y[ev]},
                metric="top1", max_drop=0.02, batch_size=64)


