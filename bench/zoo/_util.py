"""Helpers shared by the zoo's model loaders: the cache folder, ONNX export and writing, FP32 references and
fidelity metrics, and deterministic data (prose from the standard library, rendered images, synthetic
speech-like audio). Everything is made offline with fixed seeds."""

from __future__ import annotations

import functools
import hashlib
import os
import re
import sysconfig
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from sweeper.examples.real._common import digest, package_file, save_atomic

__all__ = ["DEFAULT_CACHE", "Fidelity", "cache_path", "digest", "fp32_outputs", "natural_images", "ort_runner",
           "package_file", "prose_sentences", "save_atomic", "speech_like", "torch_export", "byte_tokens"]

DEFAULT_CACHE = Path(os.environ.get("SWEEPER_ZOO_CACHE") or Path.home() / ".cache" / "sweeper" / "zoo")

RunFn = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def cache_path(cache_dir: Path | None, filename: str) -> Path:
    """``cache_dir / filename`` (``cache_dir`` defaults to ``~/.cache/sweeper/zoo``), its folder made."""
    folder = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
    folder.mkdir(parents=True, exist_ok=True)
    return folder / filename


def cached_model(cache_dir: Path | None, filename: str, make: Callable[[], onnx.ModelProto]) -> str:
    """The model file ``filename`` in the cache, made by ``make()`` and written atomically on first use."""
    path = cache_path(cache_dir, filename)
    if not path.exists():
        save_atomic(make(), path)
    return str(path)


def torch_export(module: Any, args: tuple[Any, ...], *, opset: int, input_names: Sequence[str],
                 output_names: Sequence[str], dynamic_axes: dict[str, dict[int, str]] | None = None,
                 constant_folding: bool = True) -> onnx.ModelProto:
    """``module`` exported with the TorchScript exporter (``dynamo=False``) and loaded back as a ModelProto."""
    import torch

    fd, tmp_name = tempfile.mkstemp(suffix=".onnx")
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, tmp_name, dynamo=False, opset_version=opset,
                              input_names=list(input_names), output_names=list(output_names),
                              dynamic_axes=dynamic_axes or {}, do_constant_folding=constant_folding)
        return onnx.load(tmp_name)
    finally:
        os.unlink(tmp_name)


def ort_runner(model: str | os.PathLike[str] | onnx.ModelProto, threads: int = 1) -> RunFn:
    """``run(feeds) -> outputs`` of the FP32 model on ONNX Runtime's CPU provider."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    sess = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return sess.run(None, {k: feeds[k] for k in names})

    return run


def _batches(data: Any, input_names: Sequence[str], batch_size: int):  # noqa: ANN202 - generator of feeds
    if isinstance(data, (list, tuple)):
        for feed in data:
            yield {k: np.asarray(feed[k]) for k in input_names}
        return
    n = next(len(v) for k, v in data.items() if k in input_names and np.ndim(v))
    for start in range(0, n, batch_size):
        yield {k: (data[k][start:start + batch_size] if np.ndim(data[k]) else data[k]) for k in input_names}


def fp32_outputs(model: Any, data: Any, input_names: Sequence[str], batch_size: int,
                 batch_axis: int = 0) -> list[Any]:
    """The FP32 model's outputs on ``data``: per output an array joined along ``batch_axis`` (a dict of
    arrays), or a list with one array per feed (a list of feeds)."""
    run = ort_runner(model)
    parts: list[list[np.ndarray]] = []
    for feeds in _batches(data, input_names, batch_size):
        outs = run(feeds)
        parts = parts or [[] for _ in outs]
        for acc, out in zip(parts, outs, strict=True):
            acc.append(np.asarray(out))
    if isinstance(data, (list, tuple)):
        return parts
    return [np.concatenate(p, axis=batch_axis) for p in parts]


def _cosines(out: np.ndarray, ref: np.ndarray, batch_axis: int) -> np.ndarray:
    out = np.moveaxis(np.asarray(out, np.float64), batch_axis, 0)
    ref = np.moveaxis(np.asarray(ref, np.float64), batch_axis, 0)
    if out.shape != ref.shape:
        raise ValueError(f"output shape {out.shape} differs from the FP32 reference {ref.shape}")
    n = out.shape[0] if out.ndim else 1
    out, ref = out.reshape(n, -1), ref.reshape(n, -1)
    finite = np.isfinite(out).all(axis=1)
    out = np.where(finite[:, None], out, 0.0)
    no, nr = np.linalg.norm(out, axis=1), np.linalg.norm(ref, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(no * nr > 0, np.sum(out * ref, axis=1) / np.where(no * nr > 0, no * nr, 1.0), 0.0)
    cos = np.where((no == 0) & (nr == 0), 1.0, cos)
    return np.where(finite, np.clip(cos, -1.0, 1.0), -1.0)


SAMPLE_INDEX = "sample_index"  # the evaluation data's key holding each sample's position (see with_index)


def with_index(data: Any) -> Any:
    """Evaluation data whose samples say where they are (``SAMPLE_INDEX``): a dict of arrays gets an index
    array, each feed of a list a copy with its index. sweeper hands a per-sample metric slices of its data
    (:func:`sweeper.per_sample_metric`); :class:`Fidelity` finds each sample's FP32 reference by it."""
    if isinstance(data, dict):
        n = next(len(v) for v in data.values() if np.ndim(v))
        return {**data, SAMPLE_INDEX: np.arange(n)}
    if isinstance(data, (list, tuple)):
        return [{**feed, SAMPLE_INDEX: np.int64(i)} for i, feed in enumerate(data)]
    return data


class Fidelity:
    """Metric ``fn(run, data)``: per sample, the cosine similarity of the model's outputs to the FP32 model's
    (the given output indices, default every output), averaged over those outputs; a sample with NaN/inf
    counts as -1. It declares these per-sample scores in [-1, 1] (:func:`sweeper.per_sample_metric`), so
    sweeper averages them and may stop a failing profile's evaluation early; it then gets slices of the data,
    whose ``SAMPLE_INDEX`` (:func:`with_index`) locates the reference rows. ``batch_axis``: where the samples
    are in the outputs (1 for ``[T, batch, C]``)."""

    sweeper_score_range = (-1.0, 1.0)

    def __init__(self, reference: list[Any], input_names: Sequence[str], batch_size: int,
                 outputs: Sequence[int] | None = None, batch_axis: int = 0) -> None:
        self.reference = reference
        self.input_names = list(input_names)
        self.batch_size = batch_size
        self.outputs = list(outputs) if outputs is not None else list(range(len(reference)))
        self.batch_axis = batch_axis
        self.__name__ = "fidelity_cosine"

    @classmethod
    def of(cls, model: Any, data: Any, input_names: Sequence[str], batch_size: int,
           outputs: Sequence[int] | None = None, batch_axis: int = 0) -> Fidelity:
        return cls(fp32_outputs(model, data, input_names, batch_size, batch_axis), input_names, batch_size,
                   outputs, batch_axis)

    def __call__(self, run: RunFn, data: Any) -> np.ndarray:
        scores: list[np.ndarray] = []
        self._check_whole_or_indexed(data)
        if isinstance(data, (list, tuple)):
            for pos, feed in enumerate(data):
                outs = run({k: np.asarray(feed[k]) for k in self.input_names})
                i = int(feed.get(SAMPLE_INDEX, pos))
                scores.append(np.mean([_cosines(np.asarray(outs[j])[None], np.asarray(self.reference[j][i])[None], 0)
                                       for j in self.outputs], axis=0))
            return np.concatenate(scores) if scores else np.zeros(0)
        index = np.asarray(data[SAMPLE_INDEX]) if SAMPLE_INDEX in data else None
        offset = 0
        for feeds in _batches(data, self.input_names, self.batch_size):
            outs = run(feeds)
            n = np.asarray(outs[self.outputs[0]]).shape[self.batch_axis]
            rows = np.arange(offset, offset + n) if index is None else index[offset:offset + n]
            scores.append(np.mean([_cosines(outs[j], np.take(self.reference[j], rows, axis=self.batch_axis),
                                            self.batch_axis) for j in self.outputs], axis=0))
            offset += n
        return np.concatenate(scores) if scores else np.zeros(0)

    def _check_whole_or_indexed(self, data: Any) -> None:
        """Without ``SAMPLE_INDEX`` only the whole data has its references where this metric looks: a slice
        of it would be scored against the first samples' references (a wrong metric, silently)."""
        indexed = (SAMPLE_INDEX in data[0] if data else True) if isinstance(data, (list, tuple)) \
            else SAMPLE_INDEX in data
        if indexed:
            return
        ref = self.reference[self.outputs[0]]
        whole = len(ref) if isinstance(ref, list) else np.asarray(ref).shape[self.batch_axis]
        n = len(data) if isinstance(data, (list, tuple)) else \
            next(len(v) for k, v in data.items() if k in self.input_names and np.ndim(v))
        if n != whole:
            raise ValueError(f"Fidelity got {n} samples of {whole} without {SAMPLE_INDEX!r}: give the evaluation "
                             "data through with_index (ZooModel.spec does)")


# ---------------------------------------------------------------------------------------------- text


@functools.lru_cache(maxsize=1)
def _sentence_pool() -> tuple[str, ...]:
    """English sentences from the docstrings of a fixed list of standard-library modules (read with ast),
    deduplicated and ordered by SHA-256 digest (the helpers of :mod:`sweeper.examples.minilm`)."""
    from sweeper.examples import minilm

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    seen: dict[str, str] = {}
    for rel in minilm._STDLIB_SOURCES:  # noqa: SLF001 - the same fixed list of modules
        path = stdlib / rel
        if not path.is_file():
            continue
        for doc in minilm._docstrings(path.read_text(encoding="utf-8")):  # noqa: SLF001
            for para in minilm._doc_paragraphs(doc):  # noqa: SLF001
                for raw in minilm._SPLIT.split(re.sub(r"\s+", " ", para).strip()):  # noqa: SLF001
                    s = raw.strip()
                    if s and minilm._is_prose(s):  # noqa: SLF001
                        seen.setdefault(s.casefold(), s)
    return tuple(sorted(seen.values(), key=lambda s: hashlib.sha256(s.encode()).hexdigest()))


def prose_sentences(start: int, stop: int) -> list[str]:
    """Sentences ``start:stop`` of the fixed pool (the same list on every machine with the same Python)."""
    pool = _sentence_pool()
    if stop > len(pool):
        raise ValueError(f"only {len(pool)} sentences are available, {stop} requested")
    return list(pool[start:stop])


def byte_tokens(texts: Sequence[str], seq_len: int, dtype: Any = np.int64, offset: int = 3,
                bos: int = 1, eos: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Byte-level token ids (byte + ``offset``; 0 pads, ``bos``/``eos`` around) and the attention mask."""
    ids = np.zeros((len(texts), seq_len), dtype=dtype)
    mask = np.zeros((len(texts), seq_len), dtype=dtype)
    for i, text in enumerate(texts):
        toks = [bos, *(b + offset for b in text.encode("utf-8")[: seq_len - 2]), eos]
        ids[i, : len(toks)] = toks
        mask[i, : len(toks)] = 1
    return ids, mask


# ---------------------------------------------------------------------------------------------- images


def natural_images(n: int, height: int, width: int, seed: int) -> np.ndarray:
    """``n`` uint8 RGB images ``[n, h, w, 3]``: a colour gradient, shapes, a few words of text, blur, noise."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    rng = np.random.default_rng(seed)
    out = np.zeros((n, height, width, 3), np.uint8)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(n):
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = (np.cos(rng.uniform(0, np.pi)) * xx / width + np.sin(rng.uniform(0, np.pi)) * yy / height)
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
        img = Image.fromarray((c0 + (c1 - c0) * t[..., None]).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(2, 7))):
            x0, y0 = rng.uniform(-0.2, 0.9) * width, rng.uniform(-0.2, 0.9) * height
            x1, y1 = x0 + rng.uniform(0.1, 0.6) * width, y0 + rng.uniform(0.1, 0.6) * height
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            kind = rng.integers(3)
            if kind == 0:
                draw.ellipse([x0, y0, x1, y1], fill=colour)
            elif kind == 1:
                draw.rectangle([x0, y0, x1, y1], fill=colour)
            else:
                pts = [(float(rng.uniform(0, width)), float(rng.uniform(0, height))) for _ in range(3)]
                draw.polygon(pts, fill=colour)
        if rng.random() < 0.5:
            font = ImageFont.load_default(size=max(8, height // 6))
            draw.text((float(rng.uniform(0, width / 2)), float(rng.uniform(0, height / 2))), "sweeper",
                      font=font, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 1.2))))
        arr = np.asarray(img, np.float32) + rng.normal(0, 4.0, (height, width, 3))
        out[i] = np.clip(arr, 0, 255).astype(np.uint8)
    return out


def imagenet_normalize(images: np.ndarray) -> np.ndarray:
    """uint8 ``[n, h, w, 3]`` to float32 ``[n, 3, h, w]`` with ImageNet's mean and std."""
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    return ((images.astype(np.float32) / 255.0 - mean) / std).transpose(0, 3, 1, 2).copy()


# ---------------------------------------------------------------------------------------------- audio


def _resonate(x: np.ndarray, freq: float, bw: float, sr: int) -> np.ndarray:
    """A two-pole resonator (a formant) applied to ``x``."""
    from scipy.signal import lfilter

    r = np.exp(-np.pi * bw / sr)
    a = [1.0, -2.0 * r * np.cos(2 * np.pi * freq / sr), r * r]
    return lfilter([1.0 - r], a, x)


def speech_like(n: int, samples: int, sr: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` clips of speech-like audio (float32 ``[n, samples]``, in [-1, 1]) and a per-sample voice mask:
    syllables of a glottal pulse train with jittered pitch through three formant resonators, separated by
    pauses of low background noise; some fricative-like noise bursts."""
    rng = np.random.default_rng(seed)
    audio = np.zeros((n, samples), np.float32)
    mask = np.zeros((n, samples), np.int8)
    vowels = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410))
    for i in range(n):
        x = rng.normal(0, 10 ** rng.uniform(-3.5, -2.5), samples)
        pos = int(rng.integers(0, sr // 4))
        while pos < samples:
            length = int(rng.uniform(0.12, 0.35) * sr)
            end = min(samples, pos + length)
            m = end - pos
            if rng.random() < 0.8:
                f0 = rng.uniform(90, 240) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(3, 6) * np.arange(m) / sr))
                phase = np.cumsum(f0 / sr)
                pulses = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float64)
                f1, f2, f3 = vowels[int(rng.integers(len(vowels)))]
                voiced = sum(_resonate(pulses, f, 80 + 40 * k, sr) * g
                             for k, (f, g) in enumerate(((f1, 1.0), (f2, 0.5), (f3, 0.25))))
                env = np.sin(np.pi * np.arange(m) / m) ** 0.5
                seg = voiced * env / (np.abs(voiced).max() + 1e-9) * rng.uniform(0.2, 0.8)
                mask[i, pos:end] = 1
            else:
                seg = _resonate(rng.normal(0, 1, m), rng.uniform(3000, 6000), 1500, sr)
                seg = seg / (np.abs(seg).max() + 1e-9) * rng.uniform(0.05, 0.2) * np.hanning(m)
            x[pos:end] += seg
            pos = end + int(rng.uniform(0.05, 0.6) * sr)
        audio[i] = np.clip(x, -1, 1)
    return audio, mask
