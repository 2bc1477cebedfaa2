"""Time to apply a new Profile / time of one evaluation, on the example (1 thread). Target <= 0.02.

    .venv/bin/python bench/profile_switch.py

Each switch applies a different mixed profile (random precision per group), so no cached profile is reused
as a whole; per-(quantizer, precision) values are precomputed once, as in a sweep.
"""

from __future__ import annotations

import random
import statistics
import time

from sweeper.config.experiment import load_experiment
from sweeper.pipeline import Workspace
from sweeper.quant.profile import Profile
from sweeper.sim.quantsim import QuantSim


def main() -> None:
    ws = Workspace(load_experiment("experiments/mnist_cnn.yaml"), threads=1)
    sim = QuantSim(ws.graph, ws.table, threads=1, precisions=ws.exp.candidates)
    groups = [g.name for g in ws.graph.groups]
    cands = list(ws.exp.candidates)
    for c in cands:  # warm the per-precision caches, as the first profiles of a sweep do
        sim.apply(Profile.uniform(groups, c))
    rng = random.Random(0)
    profiles = [Profile.make({g: rng.choice(cands) for g in groups}) for _ in range(50)]
    switches, evals = [], []
    for p in profiles[:10]:
        t0 = time.perf_counter()
        sim.apply(p)
        switches.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ws.evaluator.evaluate(sim.run, ws.eval_data, ws.reference)
        evals.append(time.perf_counter() - t0)
    for p in profiles[10:]:
        t0 = time.perf_counter()
        sim.apply(p)
        switches.append(time.perf_counter() - t0)
    s, e = statistics.median(switches), statistics.median(evals)
    print(f"mnist: profile switch {s * 1e3:.3f} ms, evaluation {e * 1e3:.1f} ms -> switch/eval = {s / e:.4f} "
          f"(target <= 0.02)")
    ws.close()


if __name__ == "__main__":
    main()
