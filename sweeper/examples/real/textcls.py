"""PaddleOCR's text-line orientation classifier (``ch_ppocr_mobile_v2.0_cls``), as shipped in the
``rapidocr-onnxruntime`` wheel, on text lines rendered here with labels.

The model is a MobileNetV3-style CNN (depthwise and pointwise convolutions, 35 BatchNormalization nodes,
hard-swish written as Clip/Div, squeeze-excitation) exported by Paddle2ONNX at opset 11. Input ``x``
float32 ``[batch, 3, 48, 192]`` (dynamic height and width in the file; the reader below always makes
48 x 192), output ``[batch, 2]``: the probabilities of "upright" (class 0) and "rotated by 180 degrees"
(class 1).

Data: English text lines (random words of a fixed vocabulary, digits and punctuation) drawn with the
font Pillow bundles, on slightly varied light backgrounds, half of them turned by 180 degrees; then the
package's own preprocessing (resize to height 48 keeping the aspect ratio, width at most 192, scale to
[-1, 1], pad on the right with zeros). Everything is deterministic (fixed seeds), made offline.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from sweeper.examples.real._common import package_file

PACKAGE = "rapidocr_onnxruntime"
INSTALL = "rapidocr-onnxruntime==1.4.4"
MODEL_FILE = "models/ch_ppocr_mobile_v2.0_cls_infer.onnx"
INPUT = "x"
HEIGHT, WIDTH = 48, 192
CALIBRATION_SAMPLES = 64
EVALUATION_SAMPLES = 128

_WORDS = (
    "the of and to in is was for on that with as by at from his her are this be have not which or had "
    "one all were they their an has but been more when there who would will can said each about so out "
    "time only new some could these two may first then do any like other how into than its over also "
    "after most made years many before must through back where much your way well down should because "
    "each just those people how too little state good very make world still own see men work long get "
    "here between both life being under never day same another know while last might us great old year "
    "off come since against go came right used take three invoice total amount date page order number "
    "street city account payment price quantity table figure chapter section report summary customer"
).split()
_PUNCT = (".", ",", ":", ";", "-", "/", "%", "(", ")")


def model_path() -> str:
    """The classifier inside the installed wheel (read only; nothing is copied)."""
    return str(package_file(PACKAGE, MODEL_FILE, INSTALL))


def _line(rng: np.random.Generator) -> str:
    """A text line of 2-7 tokens: words, sometimes capitalized, numbers and punctuation."""
    tokens: list[str] = []
    for _ in range(int(rng.integers(2, 8))):
        kind = rng.random()
        if kind < 0.15:
            tokens.append(str(int(rng.integers(0, 100000))))
        else:
            word = _WORDS[int(rng.integers(len(_WORDS)))]
            tokens.append(word.capitalize() if rng.random() < 0.3 else word)
        if rng.random() < 0.15:
            tokens[-1] += _PUNCT[int(rng.integers(len(_PUNCT)))]
    return " ".join(tokens)


def render_line(text: str, rng: np.random.Generator) -> np.ndarray:
    """``text`` drawn dark on a light background, cropped with a small margin: uint8 ``[h, w, 3]``."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=int(rng.integers(22, 34)))
    left, top, right, bottom = font.getbbox(text)
    margin = int(rng.integers(3, 9))
    size = (right - left + 2 * margin, bottom - top + 2 * margin)
    bg = tuple(int(v) for v in rng.integers(200, 256, 3))
    fg = tuple(int(v) for v in rng.integers(0, 70, 3))
    img = Image.new("RGB", size, bg)
    ImageDraw.Draw(img).text((margin - left, margin - top), text, font=font, fill=fg)
    arr = np.asarray(img, dtype=np.float32)
    arr += rng.normal(0.0, 6.0, arr.shape)  # sensor-like noise
    return np.clip(arr, 0, 255).astype(np.uint8)


def preprocess(image: np.ndarray) -> np.ndarray:
    """The package's preprocessing: height 48, width ceil(48 * aspect) capped at 192, [-1, 1], right
    zero padding; float32 ``[3, 48, 192]``."""
    from PIL import Image

    h, w = image.shape[:2]
    new_w = min(WIDTH, int(math.ceil(HEIGHT * w / float(h))))
    resized = np.asarray(Image.fromarray(image).resize((new_w, HEIGHT), Image.Resampling.BILINEAR), np.float32)
    out = np.zeros((3, HEIGHT, WIDTH), dtype=np.float32)
    out[:, :, :new_w] = (resized.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    return out


@functools.lru_cache(maxsize=4)
def _make(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 3, HEIGHT, WIDTH), dtype=np.float32)
    labels = np.zeros(n, dtype=np.int64)
    for i in range(n):
        line = render_line(_line(rng), rng)
        labels[i] = i % 2  # balanced: even samples upright, odd ones turned by 180 degrees
        if labels[i]:
            line = np.ascontiguousarray(line[::-1, ::-1])
        images[i] = preprocess(line)
    return images, labels


def calibration_data() -> dict[str, np.ndarray]:
    """64 labelled lines (seed 1)."""
    images, labels = _make(CALIBRATION_SAMPLES, 1)
    return {INPUT: images.copy(), "labels": labels.copy()}


def evaluation_data() -> dict[str, np.ndarray]:
    """128 other labelled lines (seed 2), half upright, half turned."""
    images, labels = _make(EVALUATION_SAMPLES, 2)
    return {INPUT: images.copy(), "labels": labels.copy()}
