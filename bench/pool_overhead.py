"""Time per profile through the Ray pool plus the full tracking path (QDQ export, MLflow child run with
artifacts, Optuna trial) / time per profile in a bare in-process loop (QuantSim.apply + evaluate), on the
example, 1 worker and 1 ORT thread on both sides. Target (issue 3): <= 1.10.

    .venv/bin/python bench/pool_overhead.py [--profiles 30]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

from _common import mixed_profiles, mnist_workspace

from sweeper.cluster.ray_pool import RayPool
from sweeper.cluster.runtime import ray_runtime
from sweeper.replica import Replica
from sweeper.search.evaluate import Sweep
from sweeper.sim.quantsim import QuantSim
from sweeper.tracking.tracker import Tracker


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profiles", type=int, default=30)
    args = ap.parse_args()
    ws = mnist_workspace()
    profiles = mixed_profiles(ws, args.profiles + 1)
    warm, profiles = profiles[0], profiles[1:]

    sim = QuantSim(ws.graph, ws.table, threads=1, precisions=ws.exp.candidates)
    sim.apply(warm)
    ws.evaluator.evaluate(sim.run, ws.eval_data, ws.reference)
    t0 = time.perf_counter()
    for p in profiles:
        sim.apply(p)
        ws.evaluator.evaluate(sim.run, ws.eval_data, ws.reference)
    bare = (time.perf_counter() - t0) / len(profiles)

    with tempfile.TemporaryDirectory() as tmp, ray_runtime(num_cpus=2):
        os.chdir(tmp)
        ws.exp = dataclasses.replace(ws.exp, output=Path(tmp) / "out", tracking_uri=f"sqlite:///{tmp}/mlflow.db")
        pool = RayPool(Replica, ws.worker_spec(), 1)
        try:
            list(pool.map_unordered([warm]))
            tracker = Tracker("bench", ws.exp.tracking_uri)
            (Path(tmp) / "exports").mkdir()
            sweep = Sweep(ws, "bench", "bench", Path(tmp) / "exports", tracker)
            t0 = time.perf_counter()
            sweep.evaluate(pool, {f"p{i}": p for i, p in enumerate(profiles)})
            tracked = (time.perf_counter() - t0) / len(profiles)
            sweep.finish()
        finally:
            pool.close()
    print(f"mnist: bare in-process loop {bare * 1e3:.1f} ms/profile, Ray pool + export + MLflow + Optuna "
          f"{tracked * 1e3:.1f} ms/profile -> overhead = {tracked / bare:.2f} (target <= 1.10)")
    ws.close()


if __name__ == "__main__":
    main()
