"""Profiles evaluated per second with 2 Ray workers / with 1 worker, on the example (1 ORT thread per
worker, this 2-core machine). Target (issue 3): >= 1.7.

    .venv/bin/python bench/scaling.py [--profiles 40]
"""

from __future__ import annotations

import argparse
import time

from _common import mixed_profiles, mnist_workspace

from sweeper.cluster.ray_pool import RayPool
from sweeper.cluster.runtime import ray_runtime
from sweeper.replica import Replica


def throughput(ws, workers: int, profiles) -> float:  # noqa: ANN001
    pool = RayPool(Replica, ws.worker_spec(), workers)
    try:
        list(pool.map_unordered(profiles[:workers]))  # warm every worker (session built, caches filled)
        t0 = time.perf_counter()
        n = sum(1 for _ in pool.map_unordered(profiles))
        return n / (time.perf_counter() - t0)
    finally:
        pool.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profiles", type=int, default=40)
    args = ap.parse_args()
    ws = mnist_workspace()
    profiles = mixed_profiles(ws, args.profiles)
    with ray_runtime(num_cpus=2):
        one = throughput(ws, 1, profiles)
        two = throughput(ws, 2, profiles)
    print(f"mnist: {one:.2f} profiles/s with 1 worker, {two:.2f} with 2 -> scaling = {two / one:.2f} "
          f"(target >= 1.7)")
    ws.close()


if __name__ == "__main__":
    main()
