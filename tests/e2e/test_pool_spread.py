"""A round of fewer profiles than the pool has call slots (two per worker) is spread over the workers: the
fast AMP search sends one probe per worker and round, and before this both probes went to the first worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweeper.config.experiment import load_experiment
from sweeper.pipeline import Workspace
from sweeper.quant.profile import Profile

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


@pytest.mark.isolated
def test_a_round_of_two_profiles_runs_on_both_workers() -> None:
    ws = Workspace(load_experiment(ROOT / "experiments" / "mnist_cnn.yaml"), threads=1)
    pool = ws.pool("ray", 2)
    try:
        groups = [g.name for g in ws.graph.groups]
        rounds = [[Profile.uniform(groups, a), Profile.uniform(groups, b)]
                  for a, b in (("w8a8", "w4a8"), ("w8a16", "w2a8"))]
        for profiles in rounds:
            workers = [r.worker for r in pool.map_unordered(profiles)]
            assert sorted(workers) == ["ray-0", "ray-1"], workers
    finally:
        pool.close()
        ws.close()
