"""The zoo's fidelity metric scores each sample against its own FP32 reference, whether sweeper hands it the
whole evaluation data or indexed slices of it (it declares per-sample scores), and refuses an unindexed slice
(scored against the first samples' references it would be silently wrong)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.zoo._util import SAMPLE_INDEX, Fidelity, with_index
from sweeper.eval.metrics import make_evaluator
from sweeper.eval.target import Target


def test_indexed_slices_score_like_the_whole_data_and_unindexed_slices_are_refused() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    metric = Fidelity([x.copy()], ["x"], batch_size=8)
    identity = lambda feeds: [feeds["x"]]  # noqa: E731
    assert np.allclose(metric(identity, {"x": x}), 1.0)  # the whole data: each sample against its own row
    data = with_index({"x": x})
    assert np.array_equal(data[SAMPLE_INDEX], np.arange(40))
    ev = make_evaluator(metric, True, 8, ["x"])  # sweeper's side: slices of 8, the mean of the scores
    assert ev.evaluate(identity, data) == pytest.approx(1.0, abs=1e-12)
    noisy = lambda feeds: [feeds["x"] + rng.standard_normal(feeds["x"].shape).astype(np.float32) * 5]  # noqa: E731
    out = ev.outcome(noisy, data, None, Target(1.0, 0.01))
    assert out.stopped and out.samples == 8
    with pytest.raises(ValueError, match="without 'sample_index'"):
        metric(identity, {"x": x[8:16]})
    feeds = with_index([{"x": x[i:i + 1]} for i in range(40)])
    per_feed = Fidelity([[x[i:i + 1] for i in range(40)]], ["x"], batch_size=1)
    assert make_evaluator(per_feed, True, 8, ["x"]).evaluate(identity, feeds) == pytest.approx(1.0, abs=1e-12)
