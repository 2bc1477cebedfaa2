"""A small GRU with an explicit state input and output, trained here in seconds on a synthetic sequence
task, exported once with ``torch.onnx.export(..., dynamo=False)`` at opset 14.

Task: tell four waveforms apart (sine, square, triangle, sawtooth) from a noisy signal with a random
frequency, phase, amplitude and offset; the signal arrives in frames of 4 samples, 24 frames per sequence.

Graph: ``x`` float32 ``[batch, frames, 4]`` (frames dynamic) and ``state`` ``[batch, 32]`` in; a linear
projection with ReLU, an ONNX ``GRU`` (the state is reshaped to ``[1, batch, 32]`` inside the model, so the
batch is on axis 0 everywhere outside), a linear head on the last step; ``logits`` ``[batch, 4]`` and
``state_out`` ``[batch, 32]`` out.

The metric, :func:`streaming_accuracy`, drives the model the way a streaming deployment does: the first
half of each sequence from a zero state, then the second half from the state the first call returned,
and scores the logits of the second call against the labels. The calibration split holds both kinds of
call (first halves with zero state, second halves with the FP32 model's state after the first half), so
the state input is calibrated on the states it will see. Training is deterministic (seed 0, one thread);
the file is cached under ``~/.cache/sweeper`` with :data:`RECIPE` in its name.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sweeper.examples.real._common import cache_dir, save_atomic

RECIPE = "v2"
OPSET = 14
INPUTS = ("x", "state")
OUTPUTS = ("logits", "state_out")
FRAME, FRAMES, HIDDEN, CLASSES = 4, 24, 32, 4
TRAIN_SAMPLES, CALIBRATION_SAMPLES, EVALUATION_SAMPLES = 2048, 64, 300
EPOCHS = 25
SEED = 0

RunFn = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def waves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy sequences float32 ``[n, FRAMES, FRAME]`` and their waveform class (int64)."""
    rng = np.random.default_rng(seed)
    t = np.arange(FRAMES * FRAME, dtype=np.float64)
    labels = rng.integers(0, CLASSES, n)
    period = rng.uniform(10.0, 40.0, (n, 1))
    phase = (t[None, :] / period + rng.uniform(0.0, 1.0, (n, 1))) % 1.0
    shapes = np.stack([
        np.sin(2 * np.pi * phase),
        np.where(phase < 0.5, 1.0, -1.0),
        4.0 * np.abs(phase - 0.5) - 1.0,
        2.0 * phase - 1.0,
    ])
    signal = shapes[labels, np.arange(n)]
    signal = signal * rng.uniform(0.5, 2.0, (n, 1)) + rng.uniform(-0.5, 0.5, (n, 1))
    signal += rng.normal(0.0, 0.15, signal.shape)
    return signal.reshape(n, FRAMES, FRAME).astype(np.float32), labels.astype(np.int64)


def build_model() -> Any:
    """Projection, GRU, head; ``forward(x, state) -> (logits, state_out)`` with the batch on axis 0."""
    import torch
    from torch import nn

    class WaveGRU(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(FRAME, HIDDEN)
            self.gru = nn.GRU(HIDDEN, HIDDEN, batch_first=True)
            self.head = nn.Linear(HIDDEN, CLASSES)

        def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            seq, h = self.gru(torch.relu(self.proj(x)), state.unsqueeze(0))
            return self.head(seq[:, -1]), h.squeeze(0)

    torch.manual_seed(SEED)
    return WaveGRU()


def train() -> Any:
    """Adam on whole sequences from a zero state (the GRU carries the state across the halves by itself)."""
    import torch

    x, y = waves(TRAIN_SAMPLES, SEED)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = build_model()
        gen = torch.Generator().manual_seed(SEED)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        zero = torch.zeros(128, HIDDEN)
        for _ in range(EPOCHS):
            order = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(xt), 128):
                idx = order[i:i + 128]
                logits, _ = net(xt[idx], zero[: len(idx)])
                loss = torch.nn.functional.cross_entropy(logits, yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


def export(path: Path) -> Path:
    """Train and export to ``path`` (dynamic batch and frames), atomically."""
    import onnx
    import torch

    net = train()
    tmp = path.with_name(f".{path.name}.export")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the exporter's note on batch_first GRUs
            torch.onnx.export(net, (torch.zeros(2, FRAMES // 2, FRAME), torch.zeros(2, HIDDEN)), str(tmp),
                              dynamo=False, opset_version=OPSET, input_names=list(INPUTS),
                              output_names=list(OUTPUTS),
                              dynamic_axes={"x": {0: "batch", 1: "frames"}, "state": {0: "batch"},
                                            "logits": {0: "batch"}, "state_out": {0: "batch"}})
        save_atomic(onnx.load(str(tmp)), path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def model_path() -> str:
    """The exported model in the cache folder, trained and exported on first use."""
    path = cache_dir() / f"gru_wave_{RECIPE}_opset{OPSET}.onnx"
    return str(path if path.exists() else export(path))


def _halves(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x[:, : FRAMES // 2], x[:, FRAMES // 2:]


@functools.lru_cache(maxsize=1)
def _calibration() -> dict[str, np.ndarray]:
    import onnxruntime as ort

    x, _ = waves(CALIBRATION_SAMPLES, 1)
    first, second = _halves(x)
    zero = np.zeros((len(x), HIDDEN), np.float32)
    sess = ort.InferenceSession(model_path(), providers=["CPUExecutionProvider"])
    mid = sess.run(None, {"x": first, "state": zero})[1]
    return {"x": np.concatenate([first, second]), "state": np.concatenate([zero, mid]).astype(np.float32)}


def calibration_data() -> dict[str, np.ndarray]:
    """64 first halves from a zero state and their 64 second halves from the FP32 model's state (seed 1)."""
    return {k: v.copy() for k, v in _calibration().items()}


def evaluation_data() -> dict[str, np.ndarray]:
    """300 whole sequences (seed 2), zero states and labels (see :func:`streaming_accuracy`)."""
    x, y = waves(EVALUATION_SAMPLES, 2)
    return {"x": x, "state": np.zeros((len(x), HIDDEN), np.float32), "labels": y}


def streaming_accuracy(run: RunFn, data: dict[str, np.ndarray]) -> float:
    """Top-1 after two calls per sequence, the second fed the state the first returned."""
    first, second = _halves(np.asarray(data["x"]))
    _, state = run({"x": np.ascontiguousarray(first), "state": np.asarray(data["state"])})[:2]
    logits = run({"x": np.ascontiguousarray(second), "state": np.asarray(state, np.float32)})[0]
    return float(np.mean(np.argmax(logits, axis=1) == np.asarray(data["labels"])))
