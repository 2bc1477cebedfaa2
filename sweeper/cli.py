"""The ``sweeper`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
import os
import signal
import socket
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from sweeper.errors import SweeperError


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class _Parser(argparse.ArgumentParser):
    """argparse with sweeper's error format: one line (what, where, expected), exit code 2, no usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"sweeper: error: {message} (`{self.prog} --help` lists the options)\n")


def _whole(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number in [minimum, maximum]; anything else is a one-line error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            raise argparse.ArgumentTypeError(f"found {text!r}: expected a whole number {bounds}")
        return value

    return parse


def _real(minimum: float, *, above: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number >= minimum (> minimum when ``above``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < minimum or (above and value == minimum):
            raise argparse.ArgumentTypeError(f"found {text!r}: expected a number {'>' if above else '>='} {minimum:g}")
        return value

    return parse


class _Choices:
    """The allowed values of an option, read from the module that owns them only when they are needed (a
    check, ``--help``), so that building the parser imports nothing heavy."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def _values(self) -> tuple[str, ...]:
        return tuple(getattr(importlib.import_module(self.module), self.name))

    def __iter__(self) -> Iterator[str]:
        return iter(self._values())

    def __contains__(self, value: object) -> bool:
        return value in self._values()


class _NotForExport(argparse.Action):
    """An option of the other commands that ``export`` would ignore: rejected, with the reason."""

    def __init__(self, option_strings: list[str], dest: str, why: str, nargs: int | str = 0, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=nargs, help=argparse.SUPPRESS, **kw)
        self.why = why

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        parser.error(f"argument {option_string}: not an option of export ({self.why})")


def _check_address(text: str) -> None:
    """``--address``: ``auto``, or host:port / ray://host:port of a running Ray head that accepts a connection
    (checked before any work: Ray itself waits for an unreachable head forever)."""
    if text == "auto":
        return
    host, sep, port = text.removeprefix("ray://").rpartition(":")
    expected = "expected auto, HOST:PORT or ray://HOST:PORT of a running Ray head (`ray start --head` prints it)"
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SweeperError("--address", f"found {text!r}: {expected}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SweeperError("--address", f"no Ray head answers at {host}:{port} ({reason}): {expected}") from None


def _check_tracking(configured: str | None) -> None:
    """The tracking store a step will log to, checked before any work (the experiment file's tracking.uri is
    checked when it is read; this covers MLFLOW_TRACKING_URI)."""
    from sweeper.config.experiment import tracking_uri_problem
    from sweeper.tracking.tracker import resolve_uri

    uri = resolve_uri(configured)
    problem = tracking_uri_problem(uri)
    if problem:
        raise SweeperError("tracking.uri" if configured else "MLFLOW_TRACKING_URI", problem)


def _pool_arguments(args: argparse.Namespace) -> None:
    """Check --address (and that it goes with a Ray pool) before any work."""
    if getattr(args, "address", None):
        if getattr(args, "pool", None) == "local":
            raise SweeperError("--address", "joins a Ray cluster: expected --pool ray (or no --pool), not --pool local")
        _check_address(args.address)


def _workspace(args: argparse.Namespace):  # noqa: ANN202
    from sweeper.config.experiment import load_experiment, writable_dir_problem
    from sweeper.pipeline import Workspace

    _pool_arguments(args)
    exp = load_experiment(args.experiment)
    if not getattr(args, "no_tracking", True):
        _check_tracking(exp.tracking_uri)
    overrides: dict[str, object] = {}
    if getattr(args, "output", None):
        out = Path(os.path.abspath(os.path.expanduser(args.output)))
        problem = writable_dir_problem(out)
        if problem:
            raise SweeperError("--output", problem)
        overrides["output"] = out
    if getattr(args, "pool", None):
        overrides["pool"] = args.pool
    if getattr(args, "workers", None) is not None:
        overrides["workers"] = args.workers
    if getattr(args, "max_drop", None) is not None:
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


def cmd_analyze(args: argparse.Namespace) -> int:
    from sweeper.search.analyzer import analysis_precisions, format_analysis, run_analyze

    base = _precision(args.base, "--base")
    ranking = args.rank
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
    ranking = args.rank
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
    from sweeper.search.amp import run_amp

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

    from sweeper.config.experiment import writable_dir_problem

    _pool_arguments(args)
    files = experiment_files(args.experiments)
    out = Path(os.path.abspath(os.path.expanduser(args.output))) if args.output else None
    if out is not None and writable_dir_problem(out):
        raise SweeperError("--output", str(writable_dir_problem(out)))
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


def _export_path(text: str) -> Path:
    """``--out``: a .onnx path whose folder exists or can be created and is writable (checked before any work)."""
    from sweeper.config.experiment import writable_dir_problem

    out = Path(os.path.abspath(os.path.expanduser(text)))
    if out.suffix != ".onnx":
        raise SweeperError("--out", f"found {text!r}: expected a path ending in .onnx (the encodings are written "
                                    "next to it as .encodings)")
    if out.is_dir():
        raise SweeperError("--out", f"{out} is a directory: expected the path of the .onnx file to write")
    problem = writable_dir_problem(out.parent)
    if problem:
        raise SweeperError("--out", problem)
    return out


def _encodings_profile(ws, path: str, doc: dict[str, Any]):  # noqa: ANN001, ANN202
    """The profile an AIMET encodings document implies for this model; a file made for another model or an entry
    the model cannot take (e.g. a scale count that is not the channel count) is a one-line error."""
    from sweeper.export.encodings_io import check_against_model

    graph = ws.graph
    weight_scales = {name: (graph.weight_array(name).shape[q.axis] if q.axis is not None else 1)
                     for name, q in graph.weight_quantizers.items()}
    try:
        check_against_model(doc, path, weight_scales, set(graph.activations))
        return ws.table.load_aimet(doc)
    except ValueError as exc:
        raise SweeperError("--encodings", str(exc)) from None


def cmd_export(args: argparse.Namespace) -> int:
    from sweeper.export.encodings_io import read_encodings, save_export
    from sweeper.export.qdq import export_qdq
    from sweeper.quant.profile import Profile

    out = _export_path(args.out)
    prec = _precision(args.precision, "--precision") if args.precision else None
    doc = None
    if args.encodings:
        try:
            doc = read_encodings(args.encodings)
        except ValueError as exc:
            raise SweeperError("--encodings", str(exc)) from None
    ws = _workspace(args)
    try:
        if doc is not None:
            profile = _encodings_profile(ws, args.encodings, doc)
        else:
            profile = Profile.uniform([g.name for g in ws.graph.groups], prec)
        model = export_qdq(ws.graph, ws.table, profile)
        save_export(model, ws.table.to_aimet(profile), out, out.with_suffix(".encodings"))
    finally:
        ws.close()
    print(f"exported {profile.label()} -> {out} and {out.with_suffix('.encodings')}")
    return 0


class _Stop(Exception):
    """Raised by the signal handlers of ``sweeper ui`` to leave the wait for the server."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _free_port(port: int) -> None:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise SweeperError("--port", f"{port} is not free on 127.0.0.1 ({exc.strerror}): expected a free port, "
                                         f"e.g. --port {port + 1}") from None


def cmd_ui(args: argparse.Namespace) -> int:
    """Serve the store with a real ``mlflow server`` in its own process group; SIGTERM, SIGINT or SIGHUP stops
    the whole group (server, uvicorn workers, job runner), not just this process."""
    import subprocess

    from sweeper.config.experiment import tracking_uri_problem
    from sweeper.tracking.server import server_command, stop_process_tree
    from sweeper.tracking.tracker import prepare_ui, resolve_uri

    uri = resolve_uri(args.uri)
    problem = tracking_uri_problem(uri)
    if problem:
        raise SweeperError("--uri", problem)
    _free_port(args.port)
    base = f"http://127.0.0.1:{args.port}"
    links = prepare_ui(uri)
    cmd = server_command(uri, args.port)
    print(f"MLflow UI on {base} ({uri}); Ctrl-C to stop", file=sys.stderr)
    for name, path in links:
        print(f"  {name}: {base}/{path}", file=sys.stderr)

    received: list[int] = []
    started: list[subprocess.Popen[bytes]] = []

    def on_signal(signum: int, frame: object) -> None:
        received.append(signum)
        if started:  # during Popen itself the signal is only noted, so the child is always known
            raise _Stop(signum)

    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {s: signal.signal(s, on_signal) for s in handled}
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": os.environ.get("MLFLOW_DISABLE_TELEMETRY", "true")}
    try:
        started.append(subprocess.Popen(cmd, start_new_session=True, env=env))
        if received:
            raise _Stop(received[0])
        return started[0].wait()
    except _Stop as stop:
        print(f"sweeper: stopping the MLflow UI ({signal.Signals(stop.signum).name})", file=sys.stderr)
        return 128 + stop.signum
    finally:
        for s in handled:
            signal.signal(s, signal.SIG_IGN)
        if started:
            stop_process_tree(started[0])
        for s, h in previous.items():
            signal.signal(s, h)


def _export_parser(sub: Any) -> None:
    sp = sub.add_parser("export", help="export one profile as ONNX QDQ + AIMET encodings")
    sp.add_argument("experiment", help="experiment YAML file")
    group = sp.add_mutually_exclusive_group(required=True)
    group.add_argument("--precision", help="uniform precision, e.g. w8a8")
    group.add_argument("--encodings", help="an AIMET encodings JSON to export")
    sp.add_argument("--out", required=True, help="path of the exported .onnx (the .encodings go next to it)")
    in_process = "export runs in this process, with no worker pool"
    for flag, why, nargs in [("--pool", in_process, "?"), ("--workers", in_process, "?"),
                             ("--address", in_process, "?"), ("--fresh", "export evaluates nothing: no study", 0),
                             ("--max-drop", "export checks no target: it writes the profile given", "?"),
                             ("--no-tracking", "export logs nothing to MLflow", 0),
                             ("--output", "export writes where --out says", "?")]:
        sp.add_argument(flag, action=_NotForExport, why=why, nargs=nargs)
    sp.set_defaults(func=cmd_export)


def _step_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    rankings = _Choices("sweeper.search.analyzer", "RANKINGS")
    for name, fn, helptext in [("run", cmd_run, "the workflow: Step 1 (baseline), then Step 3 (greedy AMP)"),
                               ("baseline", cmd_baseline, "Step 1: simulate every candidate precision")]:
        sp = sub.add_parser(name, help=helptext)
        common(sp)
        sp.set_defaults(func=fn)
    sp = sub.add_parser("analyze", help="Step 2: per-layer sensitivity analysis (report with plots)")
    common(sp)
    sp.add_argument("--base", default="w8a8", help="base precision to analyse (default w8a8)")
    sp.add_argument("--rank", default="enable_one", choices=rankings, help="ranking (default enable_one)")
    sp.set_defaults(func=cmd_analyze)
    sp = sub.add_parser("litemp", help="Step 2: flip the top-k %% most sensitive groups to a higher precision")
    common(sp)
    sp.add_argument("--base", default="w8a8", help="base precision (default w8a8)")
    sp.add_argument("--high", default="fp16", help="precision of the flipped groups (default fp16)")
    sp.add_argument("--k", default="0,5,10,15,20,30,50", help="percentages of groups to flip, tried in order")
    sp.add_argument("--rank", default="enable_one", choices=rankings, help="ranking (default enable_one)")
    sp.set_defaults(func=cmd_litemp)
    sp = sub.add_parser("amp", help="Step 3: automatic mixed precision (greedy, Optuna, or both)")
    common(sp)
    sp.add_argument("--algorithm", default="greedy", choices=_Choices("sweeper.search.amp", "ALGORITHMS"),
                    help="search (default greedy)")
    sp.add_argument("--candidates", help="comma-separated precisions (default: the experiment's candidates)")
    sp.add_argument("--cost", default="bops", choices=_Choices("sweeper.search.amp", "COSTS"),
                    help="cost to minimise (default bops; latency: the CostModel's estimate)")
    sp.add_argument("--objective", default="multi", choices=_Choices("sweeper.search.amp", "OBJECTIVES"),
                    help="Optuna: multi (NSGA-II on metric and cost, default) or constrained (TPE on cost)")
    sp.add_argument("--trials", type=_whole(1), default=100, help="Optuna trial budget (default 100)")
    sp.add_argument("--timeout", type=_real(0, above=True), default=None, help="Optuna time budget in seconds")
    sp.set_defaults(func=cmd_amp)


def build_parser() -> argparse.ArgumentParser:
    import sweeper

    p = _Parser(prog="sweeper", description="Post-training quantization sweeps for ONNX models.")
    p.add_argument("--version", action="version", version=f"sweeper {sweeper.__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def pool_options(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--pool", choices=["ray", "local"], help="worker pool (default: the experiment's, ray)")
        sp.add_argument("--workers", type=_whole(1), help="number of parallel workers")
        sp.add_argument("--address", default=None, help="Ray cluster address (default: start a local runtime)")
        sp.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("experiment", help="experiment YAML file")
        sp.add_argument("--output", help="output directory (overrides the experiment file)")
        pool_options(sp)
        sp.add_argument("--max-drop", type=_real(0), default=None,
                        help="allowed drop vs FP32 (overrides the experiment's target.max_drop)")
        sp.add_argument("--fresh", action="store_true",
                        help="start the step's study afresh (default: resume it, skipping evaluated profiles)")

    _step_parsers(sub, common)
    sp = sub.add_parser("batch", help="Step 1 on many models (a folder of experiment files, or a list)")
    sp.add_argument("experiments", nargs="+", help="experiment YAML files or folders of them")
    sp.add_argument("--output", help="output root (each experiment writes OUTPUT/<name>)")
    pool_options(sp)
    sp.set_defaults(func=cmd_batch)
    _export_parser(sub)
    sp = sub.add_parser("ui", help="start the MLflow UI on 127.0.0.1 for the project's store")
    sp.add_argument("--uri", default=None, help="tracking store (default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    sp.add_argument("--port", type=_whole(1, 65535), default=5000, help="port on 127.0.0.1 (default 5000)")
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
