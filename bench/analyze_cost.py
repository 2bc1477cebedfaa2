"""Wall time of `analyze` / (number of evaluations it makes x one FP32 evaluation), on the example.
Target (issue 4): <= 1.5 (evaluations run in parallel, nothing but the evaluations costs time).

    .venv/bin/python bench/analyze_cost.py [--base w8a8] [--workers 2]

Measured around run_analyze with the pool already started (Ray's start-up is a one-off per command),
tracking to a fresh MLflow SQLite store, and the report written; 1 ORT thread per worker.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

from _common import fp32_eval_seconds, mnist_workspace

from sweeper.quant.precision import Precision
from sweeper.search.analyzer import analysis_precisions, run_analyze
from sweeper.tracking.tracker import Tracker


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="w8a8")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    base = Precision.parse(args.base)
    ws = mnist_workspace()
    fp32 = fp32_eval_seconds(ws)
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        ws.exp = dataclasses.replace(ws.exp, output=Path(tmp) / "out", tracking_uri=f"sqlite:///{tmp}/mlflow.db")
        pool = ws.pool("ray", args.workers, extra_precisions=analysis_precisions(base), probes=True, reuse=True)
        try:
            list(pool.map_calls("pid", [()] * args.workers))  # actors up
            tracker = Tracker("bench-analyze", ws.exp.tracking_uri)
            t0 = time.perf_counter()
            rep = run_analyze(ws, pool, tracker, base)
            wall = time.perf_counter() - t0
        finally:
            pool.close()
    n = rep.doc["evaluations"]
    print(f"mnist: analyze at {base.name}: {n} evaluations (+{rep.doc['probes']} SQNR probes) in {wall:.2f}s; "
          f"one FP32 evaluation {fp32 * 1e3:.0f} ms -> wall / (evaluations x FP32 eval) = {wall / (n * fp32):.2f} "
          f"(target <= 1.5; {args.workers} workers)")
    ws.close()


if __name__ == "__main__":
    main()
