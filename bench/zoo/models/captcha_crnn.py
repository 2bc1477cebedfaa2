"""The CRNN + CTC captcha reader of the ``captcha-whisperer`` wheel (``captcha_crnn.onnx``, PyTorch exporter,
opset 17): a CNN, then a two-layer bidirectional LSTM unrolled into ~900 nodes (Gemm/Sigmoid/Tanh/Split),
and a time-major output ``logits`` ``[20, batch, 37]``: the batch is on axis 1.

Input float32 ``[batch, 3, 60, 160]``, BGR in 0..255 (no normalisation). Data: captchas drawn here with
Pillow (4-6 characters of 0-9A-Z, each turned and shifted, noise lines and dots, coloured backgrounds) with
their true text. Metric: the package's greedy CTC decoding, fraction of captchas read exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.zoo._util import package_file

INSTALL = "captcha-whisperer==0.1.0"
MODEL = "models/captcha_crnn.onnx"
LABELS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_"
BLANK, T, H, W = 36, 20, 60, 160


def render(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    rng = np.random.default_rng(seed)
    images = np.zeros((n, 3, H, W), np.float32)
    texts = []
    for i in range(n):
        text = "".join(LABELS[int(k)] for k in rng.integers(0, 36, int(rng.integers(4, 7))))
        bg = tuple(int(v) for v in rng.integers(200, 256, 3))
        img = Image.new("RGB", (W, H), bg)
        x = int(rng.integers(4, 16))
        step = (W - x - 10) / len(text)
        for ch in text:
            font = ImageFont.load_default(size=int(rng.integers(30, 40)))
            glyph = Image.new("RGBA", (48, 56), (0, 0, 0, 0))
            ImageDraw.Draw(glyph).text((8, 2), ch, font=font,
                                       fill=tuple(int(v) for v in rng.integers(0, 120, 3)) + (255,))
            glyph = glyph.rotate(float(rng.uniform(-20, 20)), resample=Image.Resampling.BILINEAR)
            img.paste(glyph, (int(x), int(rng.integers(0, 8))), glyph)
            x += step
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(1, 4))):
            draw.line([tuple(float(v) for v in rng.uniform(0, 1, 2) * (W, H)) for _ in range(2)],
                      fill=tuple(int(v) for v in rng.integers(0, 160, 3)), width=int(rng.integers(1, 3)))
        for _ in range(80):
            draw.point((float(rng.uniform(0, W)), float(rng.uniform(0, H))),
                       fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        img = img.filter(ImageFilter.GaussianBlur(0.4))
        images[i] = np.asarray(img, np.float32)[:, :, ::-1].transpose(2, 0, 1)
        texts.append(text)
    return images, texts


def decode(logits: np.ndarray) -> list[str]:
    """The package's greedy CTC decoding of ``[T, batch, 37]`` logits."""
    out = []
    for b in range(logits.shape[1]):
        chars, prev = [], BLANK
        for t in range(1, T):
            o = int(np.argmax(logits[t - 1, b, 1:]))
            if o != BLANK and o != prev:
                chars.append(LABELS[o + 1])
            prev = o
        out.append("".join(chars).replace("_", "").strip())
    return out


def exact_match(run, data: dict) -> float:  # noqa: ANN001
    """Fraction of captchas whose decoded text equals the true text."""
    hits = 0
    for s in range(0, len(data["image"]), 32):
        texts = decode(np.asarray(run({"image": data["image"][s:s + 32]})[0]))
        hits += sum(a == b for a, b in zip(texts, data["text"][s:s + 32], strict=True))
    return hits / len(data["image"])


def build(cache_dir: Path) -> dict:
    model = str(package_file("captcha_whisperer", MODEL, INSTALL))
    cal, _ = render(64, 1)
    ev, texts = render(128, 2)
    return dict(model=model, calibration={"image": cal}, evaluation={"image": ev, "text": texts},
                metric=exact_match, max_drop=0.02, batch_size=32)
