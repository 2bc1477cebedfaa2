"""A user error raised on a Ray worker (a metric that fails on a quantized profile) reaches the driver as the
one-line SweeperError, not as Ray's UnserializableException (the zoo's Swin and GPT-2 ended that way)."""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

import sweeper
from sweeper.config.experiment import load_experiment
from sweeper.errors import SweeperError

ROOT = Path(__file__).resolve().parents[2]


def test_a_sweeper_error_pickles_as_itself() -> None:
    err = pickle.loads(pickle.dumps(SweeperError("metric m", "m(run, data) failed: RuntimeError: boom")))
    assert type(err) is SweeperError and (err.where, err.message) == ("metric m", "m(run, data) failed: RuntimeError: boom")
    assert str(err) == "metric m: m(run, data) failed: RuntimeError: boom"


@pytest.mark.e2e
@pytest.mark.isolated
def test_a_metric_failing_on_a_ray_worker_is_one_line_on_the_driver(tmp_path: Path) -> None:
    driver = os.getpid()

    def metric(run, data) -> float:  # noqa: ANN001  (nested: Ray ships it by value)
        if os.getpid() != driver:
            raise RuntimeError("boom on the worker")
        out = run({"input": data["input"]})[0]
        return float(np.mean(np.argmax(out, axis=1) == data["labels"]))

    exp = load_experiment(ROOT / "experiments" / "mnist_cnn.yaml")
    exp = dataclasses.replace(exp, metric=metric, output=tmp_path / "out", pool="ray", workers=1,
                              candidates=tuple(c for c in exp.candidates if c.name == "w8a8"))
    with sweeper.Session(exp, tracking=False) as s:
        with pytest.raises(SweeperError) as info:
            s.baseline()
    assert type(info.value) is SweeperError
    assert str(info.value).endswith("failed: RuntimeError: boom on the worker") and "\n" not in str(info.value)
