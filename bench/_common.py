"""Shared helpers of the benchmark scripts."""

from __future__ import annotations

import random
import statistics
import time

from sweeper.config.experiment import load_experiment
from sweeper.pipeline import Workspace
from sweeper.quant.profile import Profile


def mnist_workspace() -> Workspace:
    return Workspace(load_experiment("experiments/mnist_cnn.yaml"), threads=1)


def mixed_profiles(ws: Workspace, n: int, seed: int = 0) -> list[Profile]:
    """``n`` distinct random mixed profiles over the experiment's candidates."""
    rng = random.Random(seed)
    groups = [g.name for g in ws.graph.groups]
    seen: dict[str, Profile] = {}
    while len(seen) < n:
        p = Profile.make({g: rng.choice(ws.exp.candidates) for g in groups})
        seen.setdefault(p.key, p)
    return list(seen.values())


def fp32_eval_seconds(ws: Workspace, reps: int = 5) -> float:
    """Median wall time of one FP32 evaluation of the whole evaluation set (ORT, the workspace's threads)."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        ws.evaluator.evaluate(ws.fp32_run, ws.eval_data, ws.reference)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
