"""Shared helpers of the benchmark scripts."""

from __future__ import annotations

import random

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
