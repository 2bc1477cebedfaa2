"""Silero VAD v6 as shipped in the ``silero-vad`` wheel (two exports of the same network).

* ``silero_vad.onnx`` (spox, opset 16): the whole network sits inside the branches of one ``If`` on the
  sample rate (16 kHz / 8 kHz), so the top-level graph has five nodes and every weight is in a subgraph.
* ``silero_vad_16k_op15.onnx`` (PyTorch exporter, opset 15): a flat graph with three ``If`` nodes, the STFT
  written as a Conv with a magnitude ``Pow``/``Sqrt``, a recurrent state.

Inputs ``input`` float32 ``[batch, 576]`` (64 samples of context + a 512-sample chunk at 16 kHz), ``state``
float32 ``[2, batch, 128]`` (batch on axis 1), ``sr`` int64 scalar; outputs the speech probability
``[batch, 1]`` and the next state. Data: synthetic speech-like clips (glottal pulses through formant
resonators, pauses, fricative noise; :func:`bench.zoo._util.speech_like`) with their true voice mask.
Calibration is a list of feeds (the state comes from the FP32 model streaming the clips); the metric streams
the evaluation clips chunk by chunk, carrying the state, and scores frame accuracy against the true mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.zoo._util import ort_runner, package_file, speech_like

INSTALL = "silero-vad==6.2.3"
SR, CHUNK, CONTEXT, SECONDS = 16000, 512, 64, 2
FILES = {"silero_vad": "data/silero_vad.onnx", "silero_vad_op15": "data/silero_vad_16k_op15.onnx"}


def stream(run, audio: np.ndarray) -> np.ndarray:  # noqa: ANN001 - run(feeds) -> outputs
    """Speech probabilities ``[clips, frames]`` of ``audio`` ``[clips, samples]``, chunk by chunk."""
    n = len(audio)
    state = np.zeros((2, n, 128), np.float32)
    ctx = np.zeros((n, CONTEXT), np.float32)
    probs = []
    for s in range(0, audio.shape[1] - CHUNK + 1, CHUNK):
        chunk = audio[:, s:s + CHUNK]
        out, state = run({"input": np.concatenate([ctx, chunk], 1), "state": np.asarray(state, np.float32),
                          "sr": np.array(SR, np.int64)})[:2]
        ctx = chunk[:, -CONTEXT:]
        probs.append(np.asarray(out)[:, 0])
    return np.stack(probs, 1)


def frame_labels(mask: np.ndarray) -> np.ndarray:
    frames = range(0, mask.shape[1] - CHUNK + 1, CHUNK)
    return np.stack([mask[:, s:s + CHUNK].mean(1) > 0.5 for s in frames], 1).astype(np.int64)


def frame_accuracy(run, data: dict) -> float:  # noqa: ANN001
    """Frame accuracy of ``probability > 0.5`` against the true voice mask, streaming every clip."""
    return float(np.mean((stream(run, data["audio"]) > 0.5) == data["frames"].astype(bool)))


def _calibration(model: str) -> list[dict[str, np.ndarray]]:
    audio, _ = speech_like(8, SR * SECONDS, SR, 1)
    run = ort_runner(model)
    feeds, n = [], len(audio)
    state = np.zeros((2, n, 128), np.float32)
    ctx = np.zeros((n, CONTEXT), np.float32)
    for i, s in enumerate(range(0, audio.shape[1] - CHUNK + 1, CHUNK)):
        chunk = audio[:, s:s + CHUNK]
        feed = {"input": np.concatenate([ctx, chunk], 1), "state": state, "sr": np.array(SR, np.int64)}
        if i % 4 == 1:
            feeds.append(feed)
        state = run(feed)[1]
        ctx = chunk[:, -CONTEXT:]
    return feeds


def _build(key: str) -> dict:
    model = str(package_file("silero_vad", FILES[key], INSTALL))
    audio, mask = speech_like(16, SR * SECONDS, SR, 2)
    return dict(model=model, calibration=_calibration(model),
                evaluation={"audio": audio, "frames": frame_labels(mask)},
                metric=frame_accuracy, max_drop=0.02, batch_size=1)


def build(cache_dir: Path) -> dict:
    return _build("silero_vad")


def build_op15(cache_dir: Path) -> dict:
    return _build("silero_vad_op15")
