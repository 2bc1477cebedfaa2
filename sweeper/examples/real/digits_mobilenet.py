"""A MobileNet-style CNN (BatchNorm, depthwise-separable convolutions, ReLU6) trained here in seconds on
scikit-learn's ``digits``, exported once with ``torch.onnx.export(..., dynamo=False)`` at opset 13.

The BatchNormalization nodes are kept in the export (``training=TrainingMode.PRESERVE`` on a model in eval
mode: the exporter does not fold them), so sweeper's graph preparation folds them into the preceding
convolutions, which have no bias of their own: the folded biases are what int32 bias encodings at
16-bit activations x 16-bit weights have to represent (issue 8, item 1).

Input ``input`` float32 ``[batch, 1, 8, 8]`` (the 8x8 images scaled to [0, 1] and normalized); output ``logits`` ``[batch, 10]``. Images 0-1496 train the model (the
first 128 of them are also the calibration split), images 1497-1796 (300) are the evaluation split.
Training is deterministic (seed 0, one thread) and takes a few seconds; the file is cached under
``~/.cache/sweeper`` (``$SWEEPER_CACHE``), its name carries :data:`RECIPE` so a changed recipe retrains.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from sweeper.examples.real._common import cache_dir

RECIPE = "v2"
OPSET = 13
INPUT, OUTPUT = "input", "logits"
TRAIN = slice(0, 1497)
CALIBRATION = slice(0, 128)
EVALUATION = slice(1497, 1797)
MEAN, STD = 0.30, 0.40
EPOCHS = 40
SEED = 0


@functools.lru_cache(maxsize=1)
def images() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as float32 ``[N, 1, 8, 8]`` (normalized) and int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0)[:, None].astype(np.float32)
    return ((x - MEAN) / STD).astype(np.float32), digits.target.astype(np.int64)


def build_model() -> Any:
    """The untrained network: a 3x3 stem and four depthwise-separable blocks, global pooling, a linear head."""
    import torch
    from torch import nn

    def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU6()]

    layers: list[nn.Module] = conv_bn(1, 16, 3)
    for cin, cout, stride in ((16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1)):
        layers += conv_bn(cin, cin, 3, stride, groups=cin)  # depthwise
        layers += conv_bn(cin, cout, 1)  # pointwise
    torch.manual_seed(SEED)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def train() -> Any:
    """Train with Adam and random one-pixel shifts, deterministically; returns the model in eval mode."""
    import torch

    x, y = images()
    xt, yt = torch.from_numpy(x[TRAIN]), torch.from_numpy(y[TRAIN])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = build_model()
        gen = torch.Generator().manual_seed(SEED)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=6e-3, total_steps=EPOCHS * ((len(xt) + 63) // 64))
        net.train()
        for _ in range(EPOCHS):
            order = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(xt), 64):
                idx = order[i:i + 64]
                dy, dx = (int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
                batch = torch.roll(xt[idx], shifts=(dy, dx), dims=(2, 3))
                loss = torch.nn.functional.cross_entropy(net(batch), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


def export(path: Path) -> Path:
    """Train and export to ``path`` (BatchNormalization kept, dynamic batch), atomically."""
    import torch

    from sweeper.examples.real._common import save_atomic

    net = train()
    tmp = path.with_name(f".{path.name}.export")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="It is recommended that constant folding")
            torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), str(tmp), dynamo=False, opset_version=OPSET,
                              input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                              training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=True)
        import onnx

        model = onnx.load(str(tmp))
        if not any(n.op_type == "BatchNormalization" for n in model.graph.node):
            raise RuntimeError("the export folded BatchNormalization; the suite needs it in the file")
        save_atomic(model, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def model_path() -> str:
    """The exported model in the cache folder, trained and exported on first use."""
    path = cache_dir() / f"digits_mobilenet_{RECIPE}_opset{OPSET}.onnx"
    return str(path if path.exists() else export(path))


def calibration_data() -> dict[str, np.ndarray]:
    """Training images 0-127."""
    x, y = images()
    return {INPUT: x[CALIBRATION].copy(), "labels": y[CALIBRATION].copy()}


def evaluation_data() -> dict[str, np.ndarray]:
    """Held-out images 1497-1796 (300) and their labels."""
    x, y = images()
    return {INPUT: x[EVALUATION].copy(), "labels": y[EVALUATION].copy()}
