"""A small PyTorch CNN trained in seconds on scikit-learn's ``digits``: the model of the QAT example and test.

``make_model()`` trains it (deterministic: seed 0, one thread, about two seconds) and returns ``(module,
example_input)``, the form ``model: torch: sweeper.examples.digits_cnn:make_model`` expects. Conv +
BatchNorm + ReLU, two more convolutions with max pooling, a linear head; images and splits are those of
:mod:`sweeper.examples.real.digits_mobilenet` (8x8, normalized): images 0-1496 train (the first 128 also
calibrate), 1497-1796 evaluate. ``training_data()`` is what ``qat.data`` loads.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sweeper.examples.real.digits_mobilenet import CALIBRATION, EVALUATION, INPUT, TRAIN, images

EPOCHS = 12
SEED = 0


def build_model() -> Any:
    """The untrained network (16-32-32 channels, about 15 k parameters)."""
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 10),
    )


def make_model() -> tuple[Any, Any]:
    """Train with Adam (batches of 64) and return the model in eval mode and an example input."""
    import torch

    x, y = images()
    xt, yt = torch.from_numpy(x[TRAIN]), torch.from_numpy(y[TRAIN])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = build_model()
        gen = torch.Generator().manual_seed(SEED)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        net.train()
        for _ in range(EPOCHS):
            order = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(xt), 64):
                idx = order[i:i + 64]
                loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval(), torch.zeros(1, 1, 8, 8)


def _split(part: slice) -> dict[str, np.ndarray]:
    x, y = images()
    return {INPUT: x[part].copy(), "labels": y[part].copy()}


def calibration_data() -> dict[str, np.ndarray]:
    """Training images 0-127."""
    return _split(CALIBRATION)


def training_data() -> dict[str, np.ndarray]:
    """Training images 0-1496 (QAT's labelled data)."""
    return _split(TRAIN)


def evaluation_data() -> dict[str, np.ndarray]:
    """Held-out images 1497-1796 (300)."""
    return _split(EVALUATION)
