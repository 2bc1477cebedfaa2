"""QuantSim evaluation time / FP32 evaluation time on every model of the suite, 1 thread, one run.

    PYTHONPATH=. .venv/bin/python bench/sim_overhead.py [--models mnist textcls ...] [--precision w8a8]

Per model, timed interleaved (the same data, metric and evaluator; the fastest of ``--reps``: on a shared
machine the minimum is the least disturbed figure):

* ``fp32``: the FP32 model in the workspace's session (ONNX Runtime's default optimizations: what a user runs);
* ``fp32 same kernels``: the FP32 model under the simulation's session options (``QuantSim.mode``: with
  ONNX Runtime's NCHWc layout kernels in LAYOUT mode, without them in PLAIN mode);
* ``export``: the exported QDQ model of the profile in ``reference_session`` (the options sim = export holds
  under): what the simulation reproduces bit for bit, the floor for any exact simulation built from ONNX
  Runtime ops;
* ``sim``: ``QuantSim.run``; ``switch``: ``QuantSim.apply`` of a random mixed profile (warm caches, as
  in a sweep), as a fraction of one simulated evaluation.

Targets (issue 12): sim / FP32 <= 1.3 and switch / eval <= 0.02 on every model.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from _common import mixed_profiles

from sweeper.config.experiment import load_experiment
from sweeper.export import export_qdq
from sweeper.model.session import ort_session, reference_session
from sweeper.pipeline import Workspace
from sweeper.quant.profile import Profile
from sweeper.sim.quantsim import QuantSim

EXPERIMENTS = {"mnist": "experiments/mnist_cnn.yaml", "minilm": "experiments/minilm.yaml",
               "textcls": "experiments/real_textcls.yaml", "layout": "experiments/real_layout.yaml",
               "digits_mobilenet": "experiments/digits_mobilenet.yaml", "gru_wave": "experiments/gru_wave.yaml"}


def _interleaved(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Fastest wall time of each function, the functions taking turns (load changes hit all alike)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up: ONNX Runtime's first run sets up its memory
        fn()
    for _ in range(reps):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    return {k: min(v) for k, v in times.items()}


def measure(key: str, precision: str, reps: int) -> dict[str, float]:
    """The figures of one model (printed as one line)."""
    ws = Workspace(load_experiment(EXPERIMENTS[key]), threads=1)
    try:
        sim = QuantSim(ws.graph, ws.table, threads=1, precisions=ws.exp.candidates)
        groups = [g.name for g in ws.graph.groups]
        profile = Profile.uniform(groups, precision)
        same_kernels = ort_session(ws.prepared, 1, exact=sim.mode)
        export = reference_session(export_qdq(ws.graph, ws.table, profile), 1)
        ev, data, ref = ws.evaluator, ws.eval_data, ws.reference
        for c in ws.exp.candidates:  # the per-(quantizer, precision) values a sweep computes once
            sim.apply(Profile.uniform(groups, c))
        sim.apply(profile)
        t = _interleaved({
            "fp32": lambda: ev.evaluate(ws.fp32_run, data, ref),
            "fp32_same_kernels": lambda: ev.evaluate(lambda f: same_kernels.run(None, f), data, ref),
            "export": lambda: ev.evaluate(lambda f: export.run(None, f), data, ref),
            "sim": lambda: ev.evaluate(sim.run, data, ref),
        }, reps)
        mixed = mixed_profiles(ws, 20)
        t0 = time.perf_counter()
        for p in mixed:
            sim.apply(p)
        t["switch"] = (time.perf_counter() - t0) / len(mixed)
    finally:
        ws.close()
    fp = t["fp32"]
    print(f"{key}: {len(ws.graph.activations)} activation quantizers, {len(groups)} groups, {precision}, "
          f"{sim.mode} mode; "
          f"FP32 eval {fp:.4f}s; sim/FP32 = {t['sim'] / fp:.2f} (target <= 1.3); "
          f"sim / FP32 same kernels = {t['sim'] / t['fp32_same_kernels']:.2f}; "
          f"export/FP32 = {t['export'] / fp:.2f}; FP32 same kernels/FP32 = {t['fp32_same_kernels'] / fp:.2f}; "
          f"switch/eval = {t['switch'] / t['sim']:.4f} (target <= 0.02)", flush=True)
    return t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=list(EXPERIMENTS), choices=list(EXPERIMENTS))
    ap.add_argument("--precision", default="w8a8")
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    for key in args.models:
        measure(key, args.precision, args.reps)


if __name__ == "__main__":
    main()
