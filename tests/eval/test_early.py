"""Evaluations that stop early (sweeper.eval.early): a profile's evaluation stops only once the best final
metric the remaining samples could give misses the target, so a profile that would pass is never stopped;
one that is not stopped gets exactly the full metric; a failing one stops after a fraction of the data."""

from __future__ import annotations

import numpy as np
import pytest

from sweeper.errors import SweeperError
from sweeper.eval.early import per_sample_metric
from sweeper.eval.metrics import Evaluator, make_evaluator
from sweeper.eval.target import Target

N, B = 400, 20  # samples, batch


def _data(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, 8)).astype(np.float32)
    return {"x": x, "labels": np.argmax(x, axis=1)}


def _noisy(level: float, seed: int = 1, bad_from: int = 0, bad_to: int = N):  # noqa: ANN202
    """A 'model' returning its input plus noise of ``level`` on the samples ``bad_from`` to ``bad_to``."""
    rng = np.random.default_rng(seed)
    state = {"seen": 0}

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        x = feeds["x"]
        idx = np.arange(state["seen"], state["seen"] + len(x))
        state["seen"] += len(x)
        noise = rng.standard_normal(x.shape).astype(np.float32) * level * ((idx >= bad_from) & (idx < bad_to))[:, None]
        return [x + noise]

    return run


def _evaluator(metric: str) -> Evaluator:
    return Evaluator(metric, True, B, ["x"])


@pytest.mark.parametrize("metric", ["top1", "cosine", "sqnr"])
def test_a_failing_profile_stops_a_passing_one_runs_to_the_end_with_the_full_metric(metric: str) -> None:
    data, ev = _data(), _evaluator(metric)
    ref = ev.reference_outputs(lambda f: [f["x"]], data) if ev.needs_reference else None
    fp32 = ev.evaluate(lambda f: [f["x"]], data, ref)
    target = Target(fp32, 0.02 if metric != "sqnr" else 70.0)  # FP32 sqnr is the 100 dB cap: 30 dB
    good = ev.outcome(_noisy(0.01), data, ref, target)
    assert not good.stopped and good.samples == good.total == N
    assert good.metric == ev.evaluate(_noisy(0.01), data, ref)  # the same run, the same number
    bad = ev.outcome(_noisy(3.0), data, ref, target)
    assert bad.stopped and bad.samples < N / 4 and bad.total == N
    assert bad.bound is not None and not target.meets(bad.bound) and not target.meets(bad.metric)
    assert not target.meets(ev.evaluate(_noisy(3.0), data, ref))  # and the full evaluation fails indeed


@pytest.mark.parametrize("metric", ["top1", "cosine", "sqnr"])
def test_a_profile_that_would_pass_is_never_stopped(metric: str) -> None:
    """Noise on the late samples only (the early batches look perfect) or on the first batch only (they look
    hopeless, the rest makes up for it). Whatever the noise, stopped implies the full metric fails; not
    stopped, the outcome is the full metric."""
    data, ev = _data(2), _evaluator(metric)
    ref = ev.reference_outputs(lambda f: [f["x"]], data) if ev.needs_reference else None
    fp32 = ev.evaluate(lambda f: [f["x"]], data, ref)
    target = Target(fp32, 0.05 if metric != "sqnr" else 75.0)
    stopped = passing_first_batch_bad = 0
    for level in (0.0, 0.05, 0.2, 0.5, 1.0, 2.0, 5.0):
        for bad_from, bad_to in ((0, N), (200, N), (380, N), (0, B)):
            got = ev.outcome(_noisy(level, 3, bad_from, bad_to), data, ref, target)
            full = ev.evaluate(_noisy(level, 3, bad_from, bad_to), data, ref)
            if got.stopped:
                stopped += 1
                assert not target.meets(full) and got.samples < N, (level, bad_from, bad_to)
            else:
                assert got.metric == full
            if (bad_from, bad_to) == (0, B):
                passing_first_batch_bad += target.meets(full)
    assert stopped >= 3 and passing_first_batch_bad >= 2  # the test is not vacuous


def test_a_user_metric_declaring_per_sample_scores_stops_lower_is_better_too() -> None:
    @per_sample_metric(0.0, 1.0)
    def error_rate(run, data):  # noqa: ANN001, ANN202
        return (np.argmax(run({"x": data["x"]})[0], axis=1) != data["labels"]).astype(float)

    data = _data()
    ev = make_evaluator(error_rate, False, B, ["x"])
    assert ev.evaluate(lambda f: [f["x"]], data) == 0.0  # per sample, averaged
    target = Target(0.0, 0.05, higher_is_better=False)
    bad = ev.outcome(_noisy(3.0), data, None, target)
    assert bad.stopped and bad.samples < N / 4 and not target.meets(bad.metric)
    good = ev.outcome(_noisy(0.01), data, None, target)
    assert not good.stopped and good.samples == N and good.metric == ev.evaluate(_noisy(0.01), data)

    @per_sample_metric(0.0, 1.0)
    def wrong(run, data):  # noqa: ANN001, ANN202
        return np.array([0.5])  # one score for a whole slice

    with pytest.raises(SweeperError, match=r"expected 20 finite scores in \[0.0, 1.0\]"):
        make_evaluator(wrong, True, B, ["x"]).evaluate(lambda f: [f["x"]], data)
    with pytest.raises(ValueError, match="finite lo < hi"):
        per_sample_metric(1.0, 0.0)


def test_a_user_metric_without_scores_always_runs_to_the_end() -> None:
    calls: list[int] = []

    def top1(run, data):  # noqa: ANN001, ANN202
        calls.append(1)
        return float(np.mean(np.argmax(run({"x": data["x"]})[0], axis=1) == data["labels"]))

    out = make_evaluator(top1, True, B, ["x"]).outcome(_noisy(3.0), _data(), None, Target(1.0, 0.01))
    assert not out.stopped and out.samples is None and calls == [1]
