"""QuantSim evaluation time / FP32 ONNX Runtime evaluation time, same data, same threads (1), one run.

    .venv/bin/python bench/sim_overhead.py [--models mnist minilm] [--precision w8a8]

Target (issue 2): <= 1.3 on both models.
"""

from __future__ import annotations

import argparse
import statistics
import time

from sweeper.config.experiment import load_experiment
from sweeper.pipeline import Workspace
from sweeper.quant.profile import Profile
from sweeper.sim.quantsim import QuantSim

EXPERIMENTS = {"mnist": "experiments/mnist_cnn.yaml", "minilm": "experiments/minilm.yaml",
               "textcls": "experiments/real_textcls.yaml", "layout": "experiments/real_layout.yaml",
               "digits_mobilenet": "experiments/digits_mobilenet.yaml"}


def _time(fn, reps: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=list(EXPERIMENTS))
    ap.add_argument("--precision", default="w8a8")
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    for key in args.models:
        measure(key, args.precision, args.reps)


def measure(key: str, precision: str, reps: int) -> None:
    ws = Workspace(load_experiment(EXPERIMENTS[key]), threads=1)
    sim = QuantSim(ws.graph, ws.table, threads=1, precisions=ws.exp.candidates)
    groups = [g.name for g in ws.graph.groups]
    sim.apply(Profile.uniform(groups, precision))
    ev, data, ref = ws.evaluator, ws.eval_data, ws.reference
    fp32 = _time(lambda: ev.evaluate(ws.fp32_run, data, ref), reps)
    simt = _time(lambda: ev.evaluate(sim.run, data, ref), reps)
    other = next(p for p in ws.exp.candidates if p.name != precision)
    switch = _time(lambda: sim.apply(Profile.uniform(groups, other)), 20)
    print(f"{key}: activation quantizers {len(ws.graph.activations)}, groups {len(groups)}, {precision}; "
          f"FP32 eval {fp32:.3f}s, sim eval {simt:.3f}s -> sim/FP32 = {simt / fp32:.2f} (target <= 1.3); "
          f"profile switch / eval = {switch / simt:.4f} (target <= 0.02)")
    ws.close()


if __name__ == "__main__":
    main()
