"""Two small recurrent voice-activity detectors, trained here in seconds, with explicit state inputs.

They have the input layouts of real streaming VAD exports, which "samples along axis 0" cannot feed:

* ``vad_fixed``: ``input [1, 16]`` and ``state [2, 1, 32]`` (a fixed batch of 1), outputs ``prob [1, 1]``
  and ``state_out [2, 1, 32]``;
* ``vad_axis1``: ``input [batch, 16]``, ``state [2, batch, 32]`` (the batch on axis 1) and a scalar int64
  ``sr`` (the sample rate, which scales the input as a real front end's normalisation does).

The task: frames of noise, with bursts of "speech" (a louder, tonal frame pattern); a frame is speech when
the recent frames are (so the state matters). Data are lists of sequences; the metric
:func:`vad_accuracy` runs each sequence frame by frame, feeding the output state back as the next input
state: a stateful loop through ``run``, the way such models are deployed. Calibration data are feed dicts
whose states come from that same loop in FP32.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

FRAME, HIDDEN, LAYERS, STEPS = 16, 32, 2, 40
SR = 16000
_CACHE = Path(os.environ.get("SWEEPER_CACHE", Path.home() / ".cache" / "sweeper")) / "recurrent"


def sequences(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``n`` sequences of ``STEPS`` frames with per-frame labels (1 = speech)."""
    rng = np.random.default_rng(seed)
    out = []
    t = np.arange(FRAME, dtype=np.float32)
    for _ in range(n):
        frames = rng.normal(0, 0.3, (STEPS, FRAME)).astype(np.float32)
        labels = np.zeros(STEPS, np.int64)
        start = int(rng.integers(0, STEPS - 10))
        length = int(rng.integers(6, 16))
        freq = rng.uniform(0.3, 1.2)
        for k in range(start, min(STEPS, start + length)):
            frames[k] += np.float32(rng.uniform(0.8, 1.5)) * np.sin(freq * t + k).astype(np.float32)
            labels[k] = 1
        out.append({"frames": frames, "labels": labels})
    return out


def _torch_model(scalar_sr: bool) -> Any:
    import torch

    class VAD(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = torch.nn.Linear(FRAME, HIDDEN)
            self.gru = torch.nn.GRU(HIDDEN, HIDDEN, num_layers=LAYERS)
            self.out = torch.nn.Linear(HIDDEN, 1)

        def forward(self, x: Any, state: Any, sr: Any = None) -> tuple[Any, Any]:
            if sr is not None:
                x = x * (sr.to(torch.float32) / SR)
            h = torch.relu(self.inp(x)).unsqueeze(0)  # one time step: [1, batch, HIDDEN]
            y, new_state = self.gru(h, state)
            return torch.sigmoid(self.out(y[0])), new_state

    torch.manual_seed(0)
    return VAD()


def _train(model: Any, seqs: list[dict[str, np.ndarray]]) -> None:
    """A few hundred Adam steps over whole sequences (seconds on one core)."""
    import torch

    frames = torch.tensor(np.stack([s["frames"] for s in seqs]))  # [N, T, F]
    labels = torch.tensor(np.stack([s["labels"] for s in seqs]), dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for step in range(150):
        idx = torch.randint(0, len(seqs), (32,), generator=torch.Generator().manual_seed(step))
        x = torch.relu(model.inp(frames[idx])).transpose(0, 1)  # [T, B, H]
        y, _ = model.gru(x)
        p = torch.sigmoid(model.out(y)).squeeze(-1).transpose(0, 1)
        loss = torch.nn.functional.binary_cross_entropy(p, labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def _export(kind: str) -> Path:
    """Train (once) and export one of the two layouts; cached."""
    path = _CACHE / f"{kind}.onnx"
    if path.exists():
        return path
    import warnings

    import torch

    model = _torch_model(kind == "vad_axis1")
    _train(model, sequences(256, seed=1))
    model.eval()
    x = torch.zeros(1, FRAME)
    state = torch.zeros(LAYERS, 1, HIDDEN)
    _CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "vad_fixed":
            torch.onnx.export(model, (x, state), str(tmp), input_names=["input", "state"],
                              output_names=["prob", "state_out"], opset_version=17, dynamo=False)
        else:
            sr = torch.tensor(SR, dtype=torch.int64)
            torch.onnx.export(model, (x, state, sr), str(tmp), input_names=["input", "state", "sr"],
                              output_names=["prob", "state_out"], opset_version=17, dynamo=False,
                              dynamic_axes={"input": {0: "batch"}, "state": {1: "batch"}, "prob": {0: "batch"},
                                            "state_out": {1: "batch"}})
    tmp.replace(path)
    return path


def vad_fixed() -> str:
    """Path of the fixed-batch-1 model (an experiment file's ``model: onnx: ...:vad_fixed``)."""
    return str(_export("vad_fixed"))


def vad_axis1() -> str:
    """Path of the batch-on-axis-1 model with a scalar ``sr`` input."""
    return str(_export("vad_axis1"))


def _feed(frame: np.ndarray, state: np.ndarray, with_sr: bool) -> dict[str, np.ndarray]:
    feed = {"input": frame[None, :].astype(np.float32), "state": state}
    if with_sr:
        feed["sr"] = np.array(SR, np.int64)
    return feed


def vad_accuracy(run: Any, data: list[dict[str, np.ndarray]]) -> float:
    """Frame accuracy, running every sequence frame by frame with the state fed back (a stateful loop)."""
    return _accuracy(run, data, with_sr=False)


def vad_accuracy_sr(run: Any, data: list[dict[str, np.ndarray]]) -> float:
    """:func:`vad_accuracy` for the model with the scalar ``sr`` input."""
    return _accuracy(run, data, with_sr=True)


def _accuracy(run: Any, data: list[dict[str, np.ndarray]], with_sr: bool) -> float:
    correct = total = 0
    for seq in data:
        state = np.zeros((LAYERS, 1, HIDDEN), np.float32)
        for frame, label in zip(seq["frames"], seq["labels"], strict=True):
            prob, state = run(_feed(frame, state, with_sr))
            correct += int((float(np.asarray(prob).ravel()[0]) > 0.5) == bool(label))
            total += 1
    return correct / total


def _calibration_feeds(kind: str, n: int) -> list[dict[str, np.ndarray]]:
    """Feed dicts with realistic states: each sequence run in FP32, state fed back."""
    from sweeper.model.session import ort_session

    sess = ort_session(Path(_export(kind)).read_bytes())
    with_sr = kind == "vad_axis1"
    feeds = []
    for seq in sequences(n, seed=7):
        state = np.zeros((LAYERS, 1, HIDDEN), np.float32)
        for frame in seq["frames"]:
            feed = _feed(frame, state, with_sr)
            feeds.append(feed)
            state = sess.run(None, feed)[1]
    return feeds


def calibration_fixed() -> list[dict[str, np.ndarray]]:
    return _calibration_feeds("vad_fixed", 4)


def calibration_axis1() -> list[dict[str, np.ndarray]]:
    return _calibration_feeds("vad_axis1", 4)


def evaluation_fixed() -> list[dict[str, np.ndarray]]:
    return sequences(12, seed=11)


def evaluation_axis1() -> list[dict[str, Any]]:
    return sequences(12, seed=11)
