"""The ``sweeper`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from sweeper.errors import SweeperError


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _workspace(args: argparse.Namespace):  # noqa: ANN202
    from sweeper.config.experiment import load_experiment
    from sweeper.pipeline import Workspace

    exp = load_experiment(args.experiment)
    overrides: dict[str, object] = {}
    if getattr(args, "output", None):
        overrides["output"] = Path(args.output)
    if getattr(args, "pool", None):
        overrides["pool"] = args.pool
    if getattr(args, "workers", None):
        overrides["workers"] = args.workers
    if getattr(args, "max_drop", None) is not None:
        if args.max_drop < 0:
            raise SweeperError("--max-drop", f"found {args.max_drop}: expected a number >= 0")
        overrides["max_drop"] = args.max_drop
    exp = dataclasses.replace(exp, **overrides)
    print(f"sweeper: preparing {exp.name} (model, calibration, FP32 reference)...", file=sys.stderr)
    return Workspace(exp)


def _tracker(ws, args: argparse.Namespace):  # noqa: ANN001, ANN202
    if getattr(args, "no_tracking", False):
        return None
    from sweeper.tracking.tracker import Tracker

    return Tracker(ws.exp.name, ws.exp.tracking_uri)


def cmd_baseline(args: argparse.Namespace) -> int:
    from sweeper.search.baseline import run_baseline

    ws = _workspace(args)
    tracker = _tracker(ws, args)
    pool = ws.pool(address=args.address)
    try:
        rep = run_baseline(ws, pool, tracker, fresh=args.fresh)
    finally:
        pool.close()
        ws.close()
    _print_baseline(ws, rep)
    if tracker is not None:
        print(f"MLflow: {tracker.uri} (experiment {ws.exp.name!r}; `sweeper ui` to browse)")
    return 0


def _print_baseline(ws, rep) -> None:  # noqa: ANN001
    from sweeper.search.baseline import format_table

    print(f"\nStep 1 - baseline precision: {ws.exp.name} ({ws.exp.metric}, max drop {ws.exp.max_drop})")
    print(format_table(rep, ws.exp.metric))
    print(f"\n{rep.interpretation}")
    if rep.chosen:
        print(f"chosen: {rep.chosen}  -> {rep.output / (rep.chosen + '.onnx')}")
    print(f"results: {rep.output / 'results.json'}")


def cmd_run(args: argparse.Namespace) -> int:
    """The workflow: Step 1 (baseline), then Step 3 (greedy AMP over the same candidates) on one pool."""
    from sweeper.search.amp import run_amp
    from sweeper.search.baseline import run_baseline

    ws = _workspace(args)
    tracker = _tracker(ws, args)
    pool = ws.pool(address=args.address, reuse=True)
    amp = None
    try:
        rep = run_baseline(ws, pool, tracker, fresh=args.fresh)
        _print_baseline(ws, rep)
        if len(ws.exp.candidates) > 1:
            print("\nStep 3 - automatic mixed precision (greedy) over the same candidates...", file=sys.stderr)
            amp = run_amp(ws, pool, tracker, candidates=list(ws.exp.candidates), algorithm="greedy",
                          fresh=args.fresh)
    finally:
        pool.close()
        ws.close()
    if amp is not None:
        _print_amp(ws, amp)
        a = amp.doc["accepted"]
        if a:
            print(f"\nrecommended: {a['profile']} ({ws.exp.metric} {a['metric']:.4f}, {a['bops_ratio']:.2f}x w8a8 BOPs)"
                  f" -> {a['onnx']}")
    if tracker is not None:
        print(f"MLflow: {tracker.uri} (experiment {ws.exp.name!r}; `sweeper ui` to browse)")
    return 0


def _precision(text: str, flag: str):  # noqa: ANN202
    from sweeper.quant.precision import Precision

    try:
        return Precision.parse(text)
    except ValueError as exc:
        raise SweeperError(flag, str(exc)) from None


def _ranking(text: str) -> str:
    from sweeper.search.analyzer import RANKINGS

    if text not in RANKINGS:
        raise SweeperError("--rank", f"found {text!r}: expected one of {', '.join(RANKINGS)}")
    return text


def cmd_analyze(args: argparse.Namespace) -> int:
    from sweeper.search.analyzer import analysis_precisions, format_analysis, run_analyze

    base = _precision(args.base, "--base")
    ranking = _ranking(args.rank)
    ws = _workspace(args)
    tracker = _tracker(ws, args)
    pool = ws.pool(address=args.address, extra_precisions=analysis_precisions(base), probes=True, reuse=True)
    try:
        rep = run_analyze(ws, pool, tracker, base, ranking, fresh=args.fresh)
    finally:
        pool.close()
        ws.close()
    print(f"\nStep 2 - sensitivity analysis: {ws.exp.name} at {base.name} (ranked by {ranking})")
    print(format_analysis(rep.doc))
    print(f"\nreport: {rep.output / 'report.html'}\nresults: {rep.output / 'sensitivity.json'}")
    return 0


def cmd_litemp(args: argparse.Namespace) -> int:
    from sweeper.search.analyzer import analysis_precisions
    from sweeper.search.litemp import format_litemp, run_litemp

    base = _precision(args.base, "--base")
    high = _precision(args.high, "--high")
    ranking = _ranking(args.rank)
    try:
        ks = tuple(float(k) for k in args.k.split(","))
    except ValueError:
        raise SweeperError("--k", f"found {args.k!r}: expected comma-separated percentages, e.g. 0,5,10") from None
    if any(k < 0 or k > 100 for k in ks):
        raise SweeperError("--k", f"found {args.k!r}: expected percentages between 0 and 100")
    ws = _workspace(args)
    tracker = _tracker(ws, args)
    pool = ws.pool(address=args.address, extra_precisions=(*analysis_precisions(base), high.name), probes=True,
                   reuse=True)
    try:
        rep = run_litemp(ws, pool, tracker, base, high, ks, ranking, fresh=args.fresh)
    finally:
        pool.close()
        ws.close()
    print(f"\nStep 2 - LiteMP: {ws.exp.name}, base {base.name}, top-k % of groups at {high.name} "
          f"(ranked by {ranking}; FP32 {ws.fp32_metric:.4f}, max drop {ws.exp.max_drop})")
    print(format_litemp(rep, ws.exp.metric))
    if rep.chosen:
        print(f"\nchosen: k = {rep.chosen.k:g} % ({len(rep.chosen.flipped)} groups at {high.name}) -> "
              f"{rep.chosen.result.onnx}")
    else:
        print("\nno k meets the target: try a higher --high precision, larger --k, or AMP")
    print(f"results: {rep.output / 'results.json'}")
    return 0


def cmd_amp(args: argparse.Namespace) -> int:
    from sweeper.search.amp import ALGORITHMS, COSTS, OBJECTIVES, run_amp

    for flag, value, allowed in [("--algorithm", args.algorithm, ALGORITHMS), ("--cost", args.cost, COSTS),
                                 ("--objective", args.objective, OBJECTIVES)]:
        if value not in allowed:
            raise SweeperError(flag, f"found {value!r}: expected one of {', '.join(allowed)}")
    if args.trials < 1:
        raise SweeperError("--trials", f"found {args.trials}: expected a whole number >= 1")
    candidates = None
    if args.candidates:
        candidates = [_precision(c.strip(), "--candidates") for c in args.candidates.split(",") if c.strip()]
        if len(candidates) < 2:
            raise SweeperError("--candidates", "expected at least two precisions, e.g. w4a8,w8a8,fp16")
    ws = _workspace(args)
    if candidates is not None:
        ws.exp = dataclasses.replace(ws.exp, candidates=tuple(candidates))
    tracker = _tracker(ws, args)
    pool = ws.pool(address=args.address, reuse=True)
    try:
        rep = run_amp(ws, pool, tracker, candidates=list(ws.exp.candidates), algorithm=args.algorithm,
                      cost=args.cost, objective=args.objective, trials=args.trials, timeout=args.timeout,
                      fresh=args.fresh)
    finally:
        pool.close()
        ws.close()
    _print_amp(ws, rep)
    return 0


def _print_amp(ws, rep) -> None:  # noqa: ANN001
    d = rep.doc
    print(f"\nStep 3 - AMP ({d['algorithm']}, cost {d['cost']}): {ws.exp.name}, candidates "
          f"{', '.join(d['candidates'])}, FP32 {d['fp32_metric']:.4f}, max drop {d['max_drop']}")
    print(f"{d['evaluations']} profiles evaluated in {d['search_seconds']:.1f}s")
    print(f"\nPareto front ({len(d['pareto_front'])} profiles):")
    print(f"  {'cost':>8} {ws.exp.metric:>10} {'est ms':>9} {'measured ms':>11}  profile")
    for f in d["pareto_front"]:
        meas = f"{f['measured_latency_ms']:.3f}" if f["measured_latency_ms"] is not None else "-"
        print(f"  {f['cost']:>8.3f} {f['metric']:>10.4f} {f['est_latency_ms']:>9.4f} {meas:>11}  {f['profile']}")
    a = d["accepted"]
    if a:
        print(f"\naccepted: {a['profile']}  {ws.exp.metric} {a['metric']:.4f} (drop {a['drop']:+.4f}), cost "
              f"{a['cost']:.3f}, BOPs {a['bops_ratio']:.2f}x w8a8, est {a['est_latency_ms']:.4f} ms, measured "
              f"{a['measured_latency_ms']:.3f} ms" if a["measured_latency_ms"] is not None else "")
        print(f"cheapest passing uniform candidate: {d['cheapest_passing_uniform']}")
        print(f"exported: {a['onnx']}")
    else:
        print("\nno evaluated profile meets the target")
    if d["latency_rank_correlation"] is not None:
        print(f"rank correlation of estimated vs measured latency over the front: {d['latency_rank_correlation']:.2f}")
    print(f"results: {rep.output / 'results.json'}  plot: {rep.output / 'pareto.png'}")


def cmd_batch(args: argparse.Namespace) -> int:
    from sweeper.search.batch import experiment_files, format_summary, log_summary, run_batch, write_summary

    files = experiment_files(args.experiments)
    out = Path(args.output) if args.output else None
    rows = run_batch(files, pool_kind=args.pool, workers=args.workers, address=args.address,
                     tracking=not args.no_tracking, output=out)
    summary = (out or Path("runs")) / "batch_summary.json"
    write_summary(rows, summary)
    print("\nBatch - Step 1 on every model")
    print(format_summary(rows))
    print(f"\nsummary: {summary}")
    if not args.no_tracking:
        log_summary(rows, summary, None)
        print("MLflow: experiment 'sweeper-batch' holds the summary")
    return 0 if not any(r.error for r in rows) else 1


def cmd_export(args: argparse.Namespace) -> int:
    from sweeper.export.encodings_io import read_encodings, save_export
    from sweeper.export.qdq import export_qdq
    from sweeper.quant.precision import Precision
    from sweeper.quant.profile import Profile

    ws = _workspace(args)
    try:
        if args.encodings:
            profile = ws.table.load_aimet(read_encodings(args.encodings))
        else:
            try:
                prec = Precision.parse(args.precision)
            except ValueError as exc:
                raise SweeperError("--precision", str(exc)) from None
            profile = Profile.uniform([g.name for g in ws.graph.groups], prec)
        out = Path(args.out)
        model = export_qdq(ws.graph, ws.table, profile)
        save_export(model, ws.table.to_aimet(profile), out, out.with_suffix(".encodings"))
    finally:
        ws.close()
    print(f"exported {profile.label()} -> {out} and {out.with_suffix('.encodings')}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    import subprocess

    from sweeper.tracking.tracker import resolve_uri

    uri = resolve_uri(args.uri)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
           "--port", str(args.port)]
    print(f"MLflow UI on http://127.0.0.1:{args.port} ({uri}); Ctrl-C to stop", file=sys.stderr)
    return subprocess.call(cmd)


def build_parser() -> argparse.ArgumentParser:
    import sweeper

    p = argparse.ArgumentParser(prog="sweeper", description="Post-training quantization sweeps for ONNX models.")
    p.add_argument("--version", action="version", version=f"sweeper {sweeper.__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def pool_options(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--pool", choices=["ray", "local"], help="worker pool (default: the experiment's, ray)")
        sp.add_argument("--workers", type=int, help="number of parallel workers")
        sp.add_argument("--address", default=None, help="Ray cluster address (default: start a local runtime)")
        sp.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("experiment", help="experiment YAML file")
        sp.add_argument("--output", help="output directory (overrides the experiment file)")
        pool_options(sp)
        sp.add_argument("--max-drop", type=float, default=None,
                        help="allowed drop vs FP32 (overrides the experiment's target.max_drop)")
        sp.add_argument("--fresh", action="store_true",
                        help="start the step's study afresh (default: resume it, skipping evaluated profiles)")

    for name, fn, helptext in [("run", cmd_run, "the workflow: Step 1 (baseline), then Step 3 (greedy AMP)"),
                               ("baseline", cmd_baseline, "Step 1: simulate every candidate precision")]:
        sp = sub.add_parser(name, help=helptext)
        common(sp)
        sp.set_defaults(func=fn)
    sp = sub.add_parser("analyze", help="Step 2: per-layer sensitivity analysis (report with plots)")
    common(sp)
    sp.add_argument("--base", default="w8a8", help="base precision to analyse (default w8a8)")
    sp.add_argument("--rank", default="enable_one", help="ranking: enable_one (default), disable_one, sqnr")
    sp.set_defaults(func=cmd_analyze)
    sp = sub.add_parser("litemp", help="Step 2: flip the top-k %% most sensitive groups to a higher precision")
    common(sp)
    sp.add_argument("--base", default="w8a8", help="base precision (default w8a8)")
    sp.add_argument("--high", default="fp16", help="precision of the flipped groups (default fp16)")
    sp.add_argument("--k", default="0,5,10,15,20,30,50", help="percentages of groups to flip, tried in order")
    sp.add_argument("--rank", default="enable_one", help="ranking: enable_one (default), disable_one, sqnr")
    sp.set_defaults(func=cmd_litemp)
    sp = sub.add_parser("amp", help="Step 3: automatic mixed precision (greedy, Optuna, or both)")
    common(sp)
    sp.add_argument("--algorithm", default="greedy", help="greedy (default), optuna, greedy+optuna")
    sp.add_argument("--candidates", help="comma-separated precisions (default: the experiment's candidates)")
    sp.add_argument("--cost", default="bops", help="bops (default), bytes, latency (the CostModel's estimate)")
    sp.add_argument("--objective", default="multi",
                    help="Optuna: multi (NSGA-II on metric and cost, default) or constrained (TPE on cost)")
    sp.add_argument("--trials", type=int, default=100, help="Optuna trial budget (default 100)")
    sp.add_argument("--timeout", type=float, default=None, help="Optuna time budget in seconds")
    sp.set_defaults(func=cmd_amp)
    sp = sub.add_parser("batch", help="Step 1 on many models (a folder of experiment files, or a list)")
    sp.add_argument("experiments", nargs="+", help="experiment YAML files or folders of them")
    sp.add_argument("--output", help="output root (each experiment writes OUTPUT/<name>)")
    pool_options(sp)
    sp.set_defaults(func=cmd_batch)
    sp = sub.add_parser("export", help="export one profile as ONNX QDQ + AIMET encodings")
    common(sp)
    group = sp.add_mutually_exclusive_group(required=True)
    group.add_argument("--precision", help="uniform precision, e.g. w8a8")
    group.add_argument("--encodings", help="an AIMET encodings JSON to export")
    sp.add_argument("--out", required=True, help="path of the exported .onnx")
    sp.set_defaults(func=cmd_export)
    sp = sub.add_parser("ui", help="start the MLflow UI on 127.0.0.1 for the project's store")
    sp.add_argument("--uri", default=None)
    sp.add_argument("--port", type=int, default=5000)
    sp.set_defaults(func=cmd_ui)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    _quiet()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SweeperError as exc:
        print(f"sweeper: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("sweeper: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
