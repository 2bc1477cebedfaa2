"""AMP wall time / (number of evaluations x one FP32 evaluation / workers), on the example.
Target (issue 5): <= 1.3.

    .venv/bin/python bench/amp_efficiency.py [--algorithm greedy] [--workers 2] [--repeats 3]

Timed around run_amp with the pool already started (Ray's start-up is a one-off per command), tracking to
a fresh MLflow SQLite store; latency measurement of the exported front is switched off (it is not search).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

from _common import fp32_eval_seconds, mnist_workspace

from sweeper.quant.precision import Precision
from sweeper.search.amp.step import run_amp
from sweeper.tracking.tracker import Tracker

CANDIDATES = "w2a8,w4a4,w4a8,w8a8,w8a16,fp16"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--algorithm", default="greedy")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3, help="independent AMP runs (fresh workers, study, store)")
    ap.add_argument("--no-tracking", action="store_true", help="no MLflow child runs (the Optuna study stays)")
    args = ap.parse_args()
    ws = mnist_workspace()
    cands = tuple(Precision.parse(c) for c in CANDIDATES.split(","))
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        for r in range(args.repeats):
            fp32 = fp32_eval_seconds(ws)  # measured next to each run: the machine's speed drifts
            if hasattr(ws, "evaluated"):
                ws.evaluated.clear()  # each repeat evaluates afresh (a workflow shares evaluations otherwise)
            ws.exp = dataclasses.replace(ws.exp, output=Path(tmp) / f"out{r}",
                                         tracking_uri=f"sqlite:///{tmp}/mlflow{r}.db", candidates=cands)
            pool = ws.pool("ray", args.workers, reuse=True)  # as `sweeper amp` starts it
            try:
                list(pool.map_calls("pid", [()] * args.workers))  # actors up
                tracker = None if args.no_tracking else Tracker("bench-amp", ws.exp.tracking_uri)
                t0 = time.perf_counter()
                rep = run_amp(ws, pool, tracker, candidates=list(cands), algorithm=args.algorithm,
                              trials=args.trials, measure=False)
                wall = time.perf_counter() - t0
                reuse = [stats for _, stats in pool.map_calls("reuse_stats", [()] * args.workers)]
            finally:
                pool.close()
            n = rep.doc["evaluations"]
            ratio = wall / (n * fp32 / args.workers)
            ratios.append(ratio)
            mode = "no MLflow" if args.no_tracking else "MLflow on"
            print(f"run {r + 1}: AMP {args.algorithm} ({mode}): {n} evaluations in {wall:.2f}s (search "
                  f"{rep.doc['search_seconds']:.2f}s); one FP32 evaluation {fp32 * 1e3:.0f} ms, {args.workers} "
                  f"workers -> wall / (evaluations x FP32 / workers) = {ratio:.2f}; accepted "
                  f"{rep.doc['accepted']['profile']} at {rep.doc['accepted']['bops_ratio']:.2f}x w8a8 BOPs")
            print(f"       prefix reuse per worker: {reuse}")
    print(f"mnist: AMP wall / (evaluations x FP32 evaluation / workers): median {statistics.median(ratios):.2f} "
          f"over {len(ratios)} runs (min {min(ratios):.2f}, max {max(ratios):.2f}) (target <= 1.3)")
    ws.close()


if __name__ == "__main__":
    main()
