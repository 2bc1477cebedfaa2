"""PaddleOCR PP-OCRv4 text detection and recognition models as shipped in the ``rapidocr-onnxruntime`` wheel
(Paddle2ONNX, opset 12, every dimension dynamic, hundreds of ``Constant`` nodes):

* ``ppocr_det`` (``ch_PP-OCRv4_det_infer.onnx``): DBNet with a PP-LCNetV3 backbone, an FPN neck with
  ``Resize`` upsampling and a ``ConvTranspose`` head; input ``x`` ``[batch, 3, H, W]`` (ImageNet
  normalisation), output the text probability map ``[batch, 1, H, W]``.
* ``ppocr_rec`` (``ch_PP-OCRv4_rec_infer.onnx``): SVTR-LCNet, a CNN then transformer blocks (MatMul,
  Softmax attention, LayerNorm written as ReduceMean/Pow/Sqrt/Div), CTC over 6625 characters (the dictionary
  is in the model's metadata); input ``[batch, 3, 48, 320]`` ([-1, 1], right padding), output
  ``[batch, 40, 6625]`` probabilities.

Data: text rendered with Pillow. Detection: 480 x 640 pages of scattered text lines (and a few boxes and rules
that are not text) with the true line boxes; metric: pixel F1 of ``probability > 0.3`` against the union of
the true line boxes, shrunk as DBNet's training targets are. Recognition: the suite's text lines (:mod:`sweeper.examples.real.textcls`) upright, with
their true text; metric: character accuracy, 1 - edit distance / length.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from bench.zoo._util import package_file

INSTALL = "rapidocr-onnxruntime==1.4.4"
DET, REC = "models/ch_PP-OCRv4_det_infer.onnx", "models/ch_PP-OCRv4_rec_infer.onnx"
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
PH, PW = 480, 640
RH, RW = 48, 320


# ---------------------------------------------------------------------------------------------- detection


def render_pages(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pages, float32 ``[n, 3, 480, 640]``, and their text masks ``[n, 480, 640]`` (uint8)."""
    from PIL import Image, ImageDraw, ImageFont

    from sweeper.examples.real.textcls import _line

    rng = np.random.default_rng(seed)
    x = np.zeros((n, 3, PH, PW), np.float32)
    masks = np.zeros((n, PH, PW), np.uint8)
    for i in range(n):
        img = Image.new("RGB", (PW, PH), tuple(int(v) for v in rng.integers(215, 256, 3)))
        draw = ImageDraw.Draw(img)
        mask = Image.new("L", (PW, PH), 0)
        mdraw = ImageDraw.Draw(mask)
        for _ in range(int(rng.integers(1, 4))):  # non-text clutter
            x0, y0 = float(rng.uniform(0, PW - 60)), float(rng.uniform(0, PH - 40))
            draw.rectangle([x0, y0, x0 + float(rng.uniform(30, 200)), y0 + float(rng.uniform(20, 120))],
                           outline=tuple(int(v) for v in rng.integers(0, 200, 3)), width=2)
        y = float(rng.uniform(5, 30))
        while y < PH - 40:
            font = ImageFont.load_default(size=int(rng.integers(14, 30)))
            text = _line(rng)
            left, top, right, bottom = font.getbbox(text)
            x0 = float(rng.uniform(5, max(6, PW - (right - left) - 5)))
            draw.text((x0 - left, y - top), text, font=font, fill=tuple(int(v) for v in rng.integers(0, 90, 3)))
            w, h = right - left, bottom - top
            d = w * h * (1 - 0.4 ** 2) / (2 * (w + h))  # DBNet's shrink of a text box (ratio 0.4)
            mdraw.rectangle([x0 + d, y + d, x0 + w - d, y + h - d], fill=1)
            y += bottom - top + float(rng.uniform(8, 40))
        arr = np.asarray(img, np.float32) + rng.normal(0, 5, (PH, PW, 3))
        x[i] = ((np.clip(arr, 0, 255) / 255.0 - MEAN) / STD).transpose(2, 0, 1)
        masks[i] = np.asarray(mask)
    return x, masks


def pixel_f1(run, data: dict) -> float:  # noqa: ANN001
    """Pixel F1 of ``probability > 0.3`` against the true text-line boxes, over all pages."""
    tp = fp = fn = 0
    for s in range(0, len(data["x"]), 4):
        pred = np.asarray(run({"x": data["x"][s:s + 4]})[0])[:, 0] > 0.3
        truth = data["mask"][s:s + 4].astype(bool)
        tp += int(np.sum(pred & truth))
        fp += int(np.sum(pred & ~truth))
        fn += int(np.sum(~pred & truth))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0


def build_det(cache_dir: Path) -> dict:
    model = str(package_file("rapidocr_onnxruntime", DET, INSTALL))
    cx, _ = render_pages(4, 1)
    ex, em = render_pages(8, 2)
    return dict(model=model, calibration={"x": cx}, evaluation={"x": ex, "mask": em}, metric=pixel_f1,
                max_drop=0.02, batch_size=4)


# ---------------------------------------------------------------------------------------------- recognition


def _prep_line(image: np.ndarray) -> np.ndarray:
    from PIL import Image

    h, w = image.shape[:2]
    new_w = min(RW, int(math.ceil(RH * w / float(h))))
    resized = np.asarray(Image.fromarray(image).resize((new_w, RH), Image.Resampling.BILINEAR), np.float32)
    out = np.zeros((3, RH, RW), np.float32)
    out[:, :, :new_w] = (resized.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    return out


def render_lines(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    from sweeper.examples.real.textcls import _line, render_line

    rng = np.random.default_rng(seed)
    xs, texts = [], []
    for _ in range(n):
        text = _line(rng)
        while len(text) > 30:
            text = text.rsplit(" ", 1)[0]
        xs.append(_prep_line(render_line(text, rng)))
        texts.append(text)
    return np.stack(xs), texts


def _edit(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


class CharAccuracy:
    """Greedy CTC decoding with the model's dictionary; mean of ``1 - edit distance / len(truth)``."""

    def __init__(self, characters: list[str]) -> None:
        self.chars = ["<blank>", *characters, " "]
        self.__name__ = "char_accuracy"

    def decode(self, probs: np.ndarray) -> list[str]:
        out = []
        for row in probs.argmax(-1):
            keep = [int(k) for i, k in enumerate(row) if k != 0 and (i == 0 or k != row[i - 1])]
            out.append("".join(self.chars[k] for k in keep).strip())
        return out

    def __call__(self, run, data: dict) -> float:  # noqa: ANN001
        scores = []
        for s in range(0, len(data["x"]), 32):
            for got, truth in zip(self.decode(np.asarray(run({"x": data["x"][s:s + 32]})[0])),
                                  data["text"][s:s + 32], strict=True):
                scores.append(max(0.0, 1.0 - _edit(got, truth) / max(1, len(truth))))
        return float(np.mean(scores))


def build_rec(cache_dir: Path) -> dict:
    import onnx

    model = str(package_file("rapidocr_onnxruntime", REC, INSTALL))
    meta = {p.key: p.value for p in onnx.load(model, load_external_data=False).metadata_props}
    cx, _ = render_lines(32, 1)
    ex, texts = render_lines(64, 2)
    return dict(model=model, calibration={"x": cx}, evaluation={"x": ex, "text": texts},
                metric=CharAccuracy(meta["character"].splitlines()), max_drop=0.02, batch_size=32)
