"""A workflow evaluates each profile once: a step reuses what an earlier step of the same workspace
evaluated (``sweeper run``: Step 1's uniform candidates are AMP's uniform points)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from conftest import fragile_mlp, write_experiment

from sweeper.config.experiment import load_experiment
from sweeper.pipeline import Workspace
from sweeper.search.amp.step import run_amp
from sweeper.search.baseline import run_baseline


class CountingPool:
    """The in-process pool, counting every profile it is asked to evaluate."""

    def __init__(self, pool) -> None:  # noqa: ANN001
        self.pool, self.seen = pool, Counter()
        self.size = pool.size

    def map_unordered(self, profiles, reference=None, target=None):  # noqa: ANN001, ANN201
        profiles = list(profiles)
        self.seen.update(p.key for p in profiles)
        return self.pool.map_unordered(profiles, reference, target)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.pool, name)


def test_baseline_then_amp_evaluates_each_profile_once(tmp_path: Path) -> None:
    x = np.random.default_rng(3).standard_normal((64, 16)).astype(np.float32)
    ws = Workspace(load_experiment(write_experiment(tmp_path, fragile_mlp(), {"x": x}, max_drop=0.002,
                                                    candidates="[w4a8, w8a8, fp16]")))
    pool = CountingPool(ws.pool())
    try:
        base = run_baseline(ws, pool, None)
        amp = run_amp(ws, pool, None, candidates=list(ws.exp.candidates), algorithm="greedy", measure=False)
    finally:
        pool.close()
        ws.close()
    assert max(pool.seen.values()) == 1  # no profile evaluated twice
    uniform = {r.profile_key for r in base.rows}
    assert uniform <= set(pool.seen)
    # AMP's results still hold the uniform candidates, with Step 1's metrics
    by_name = {e["name"]: e["metric"] for e in amp.doc["all"]}
    assert {by_name[f"uniform:{r.name}"] for r in base.rows} == {r.metric for r in base.rows}
