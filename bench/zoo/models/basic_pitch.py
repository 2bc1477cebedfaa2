"""Spotify's Basic Pitch (ICASSP 2022 note/onset/contour model, ``nmp.onnx``) as shipped in the
``basic-pitch`` wheel: a Keras model converted by tf2onnx (opset 15, ``ai.onnx.ml`` imported) whose graph
holds its own signal front end (a constant-Q transform written as Conv/Pad/Reshape, then ``Sqrt`` of the
power, ``Log`` and a normalisation with ``ReduceMin``/``ReduceMax``/``Div``), NHWC tensors, TensorFlow names
(``serving_default_input_2:0``, ``StatefulPartitionedCall:1``), a dynamic batch and three outputs.

Input float32 ``[batch, 43844, 1]`` (2 s at 22050 Hz); outputs, in file order, onsets ``[batch, 172, 88]``,
notes ``[batch, 172, 88]`` and the pitch contour ``[batch, 172, 264]``. Data: synthetic piano-like notes
(harmonics with decaying envelopes, 1-3 notes at a time, MIDI 36-84) with their true piano roll. Metric:
frame-level note F1 of ``note > 0.5`` against the true roll.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.zoo._util import package_file

INSTALL = "basic-pitch==0.4.0"
MODEL = "saved_models/icassp_2022/nmp.onnx"
INPUT = "serving_default_input_2:0"
SR, SAMPLES, FRAMES, FPS = 22050, 43844, 172, 22050 / 256


def render(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` clips ``[n, 43844, 1]`` and their piano rolls ``[n, 172, 88]`` (int8)."""
    rng = np.random.default_rng(seed)
    audio = np.zeros((n, SAMPLES), np.float64)
    roll = np.zeros((n, FRAMES, 88), np.int8)
    t = np.arange(SAMPLES) / SR
    for i in range(n):
        start = 0.0
        while start < SAMPLES / SR - 0.25:
            dur = rng.uniform(0.25, 0.8)
            for _ in range(int(rng.integers(1, 4))):
                midi = int(rng.integers(36, 85))
                f0 = 440.0 * 2 ** ((midi - 69) / 12)
                on = (t >= start) & (t < start + dur)
                tt = t[on] - start
                env = np.exp(-tt * rng.uniform(1.5, 4.0)) * np.minimum(1.0, tt / 0.01) * np.minimum(1.0, (dur - tt) / 0.02)
                tone = sum(np.sin(2 * np.pi * f0 * k * tt + rng.uniform(0, 2 * np.pi)) / k ** 1.3 for k in range(1, 7)
                           if f0 * k < SR / 2)
                audio[i, on] += rng.uniform(0.15, 0.35) * env * tone
                roll[i, int(start * FPS): min(FRAMES, int((start + dur) * FPS)), midi - 21] = 1
            start += dur + rng.uniform(0.0, 0.15)
        audio[i] += rng.normal(0, 1e-3, SAMPLES)
    audio /= max(1.0, float(np.abs(audio).max()))
    return audio[..., None].astype(np.float32), roll


def note_f1(run, data: dict) -> float:  # noqa: ANN001
    """Frame-level note F1 (``note > 0.5`` vs the true roll), over all clips."""
    tp = fp = fn = 0
    x, roll = data[INPUT], data["roll"].astype(bool)
    for s in range(0, len(x), 4):
        pred = np.asarray(run({INPUT: x[s:s + 4]})[1]) > 0.5
        truth = roll[s:s + 4]
        tp += int(np.sum(pred & truth))
        fp += int(np.sum(pred & ~truth))
        fn += int(np.sum(~pred & truth))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0


def build(cache_dir: Path) -> dict:
    model = str(package_file("basic_pitch", MODEL, INSTALL))
    cal, _ = render(8, 1)
    ev, roll = render(16, 2)
    return dict(model=model, calibration={INPUT: cal}, evaluation={INPUT: ev, "roll": roll}, metric=note_f1,
                max_drop=0.02, batch_size=4)
