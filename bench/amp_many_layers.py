"""AMP on real models with 100-400 quantizer groups: search time in FP32 evaluations' worth, on 2 workers.
Target (issue 12, item 2): AMP search time <= 30 FP32 evaluations' worth on 2 workers, the accepted profile
meeting the target under the full evaluation, at <= 1.1x the BOPs of today's exhaustive greedy.

    .venv/bin/python bench/amp_many_layers.py [--models real_textcls,real_layout] [--exhaustive real_textcls]
                                              [--workers 2] [--tracking]

Per model, in one run and one process: the FP32 evaluation time (median of 3 per worker, on the pool's workers as
every profile's ``eval_seconds`` is timed, measured next to each search since the machine's speed drifts; the
driver's own figure is printed too), then each search through the Python API
(``sweeper.Session`` with ``pool="ray", workers=2``, the pool started before the clock starts, fresh study,
latency measurement off: it is not search). Printed per search: search seconds / FP32 evaluation seconds,
the number of full evaluations (every profile AMP evaluates is a full evaluation of the evaluation set; the
accepted one is among them), the accepted profile's metric and BOPs, and the BOPs ratio fast / exhaustive.
``--exhaustive`` names the models the exhaustive greedy also runs on (groups x candidates evaluations: on the
383-group layout detector that is about 1900 evaluations, over an hour on this machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from _common import fp32_eval_seconds

from sweeper.api import Session, amp_needs
from sweeper.config.experiment import load_experiment

TARGET_EVALS = 30.0
TARGET_BOPS = 1.1


def fp32_on_workers(pool: Any, workers: int, reps: int = 3) -> float:
    """Median seconds of one FP32 evaluation on the pool's workers, timed like every profile's
    ``eval_seconds`` (their threads, data, metric and niceness: Ray runs its workers at nice 15, which on a
    machine other jobs load gives them less CPU than this process)."""
    return statistics.median(sec for _, (_m, sec) in pool.map_calls("fp32_eval", [()] * (workers * reps)))


def run_search(s: Session, algorithm: str, workers: int) -> dict[str, Any]:
    """One AMP search on the session's pool, from scratch (no study, no profile the workspace knows)."""
    s.ws.evaluated.clear()  # a workflow reuses what an earlier step evaluated: not here
    pool = s.pool(amp_needs(s.exp.candidates, algorithm, len(s.ws.graph.groups)))
    list(pool.map_calls("pid", [()] * workers))  # actors up before the clock starts
    plain, fp32 = fp32_eval_seconds(s.ws), fp32_on_workers(pool, workers)
    rep = s.amp(algorithm=algorithm, fresh=True, measure=False)
    d = rep.doc
    acc = d["accepted"] or {}
    evals = [e for e in (s.ws.evaluated or {}).values()]
    return {"algorithm": algorithm, "fp32_s": fp32, "fp32_driver_s": plain,
            "profile_eval_s": sum(e["eval_seconds"] for e in evals) / max(1, len(evals)),
            "search_s": d["search_seconds"],
            "evals_worth": d["search_seconds"] / fp32, "evaluations": d["evaluations"],
            "metric": acc.get("metric"), "meets": acc.get("drop") is not None and s.ws.meets(acc["metric"]),
            "bops": acc.get("bops_ratio"), "profile": acc.get("profile"),
            "noise_s": (d.get("fast") or {}).get("noise_seconds"),
            "peak_rss_mb": d.get("worker_peak_rss_mb") or {}}


def show(model: str, groups: int, fp32_metric: float, threshold: float, r: dict[str, Any]) -> None:
    print(f"{model} ({groups} groups, FP32 {fp32_metric:.4f}, threshold {threshold:.4f}) {r['algorithm']}: "
          f"search {r['search_s']:.1f} s / FP32 evaluation {r['fp32_s']:.3f} s = {r['evals_worth']:.1f} "
          f"evaluations' worth (target <= {TARGET_EVALS:g}); {r['evaluations']} full evaluations; accepted "
          f"{r['profile']} metric {r['metric']} (meets target: {r['meets']}) at {r['bops']:.4f}x w8a8 BOPs; "
          f"FP32 evaluation on a worker {r['fp32_s']:.3f} s (in this process {r['fp32_driver_s']:.3f} s); "
          f"one profile evaluation on a worker {r['profile_eval_s']:.3f} s (mean)"
          + (f"; noise estimate {r['noise_s']:.2f} s" if r["noise_s"] is not None else "")
          + "; peak RSS per worker " + ", ".join(f"{w} {mb:.0f} MB" for w, mb in sorted(r["peak_rss_mb"].items())),
          flush=True)


def bench_model(model: str, exhaustive: bool, workers: int, tracking: bool, tmp: Path) -> None:
    exp = load_experiment(f"experiments/{model}.yaml")
    exp = dataclasses.replace(exp, output=tmp / model, tracking_uri=f"sqlite:///{tmp}/{model}-mlflow.db",
                              study_storage=f"sqlite:///{tmp}/{model}-study.db")
    with Session(exp, tracking=tracking, pool="ray", workers=workers) as s:
        ws = s.ws
        groups = len(ws.graph.groups)
        phase1 = groups * (len(exp.candidates) - 1) + len(exp.candidates)
        print(f"{model}: {groups} groups, candidates {','.join(c.name for c in exp.candidates)}; today's "
              f"phase 1 alone is {phase1} full evaluations", flush=True)
        runs = {}
        for algorithm in ("fast", "greedy") if exhaustive else ("fast",):
            runs[algorithm] = run_search(s, algorithm, workers)
            show(model, groups, ws.fp32_metric, ws.target.threshold, runs[algorithm])
        if exhaustive:
            f, g = runs["fast"], runs["greedy"]
            print(f"{model}: fast / exhaustive greedy: BOPs {f['bops'] / g['bops']:.3f} (target <= {TARGET_BOPS}), "
                  f"full evaluations {f['evaluations']} / {g['evaluations']}, search time "
                  f"{f['evals_worth']:.1f} / {g['evals_worth']:.1f} FP32 evaluations' worth "
                  f"(= {f['search_s'] / g['search_s']:.3f})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="real_textcls,real_layout")
    ap.add_argument("--exhaustive", default="real_textcls", help="models to run today's exhaustive greedy on too")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tracking", action="store_true", help="MLflow child runs on (a fresh SQLite store)")
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    exhaustive = set(filter(None, args.exhaustive.split(",")))
    with tempfile.TemporaryDirectory() as tmp:
        for model in filter(None, args.models.split(",")):
            bench_model(model, model in exhaustive, args.workers, args.tracking, Path(tmp))


if __name__ == "__main__":
    main()
