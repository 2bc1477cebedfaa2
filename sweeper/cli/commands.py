"""The ``sweeper`` commands: parse, check every option before any work, run through :mod:`sweeper.api`."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sweeper.cli.options import (
    NotForExport,
    Parser,
    check_pool_arguments,
    free_port,
    precision_arg,
    real,
    whole,
)
from sweeper.errors import SweeperError


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _check_tracking(configured: str | None) -> None:
    """The tracking store a step will log to, checked before any work (the experiment file's tracking.uri is
    checked when it is read; this covers MLFLOW_TRACKING_URI)."""
    from sweeper.config.paths import tracking_uri_problem
    from sweeper.tracking.tracker import resolve_uri

    uri = resolve_uri(configured)
    problem = tracking_uri_problem(uri)
    if problem:
        raise SweeperError("tracking.uri" if configured else "MLFLOW_TRACKING_URI", problem)


def _experiment(args: argparse.Namespace):  # noqa: ANN202
    """The experiment file with the command line's overrides, every option checked before any work."""
    from sweeper.config.experiment import load_experiment
    from sweeper.config.paths import writable_dir_problem

    check_pool_arguments(args)
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
    return dataclasses.replace(exp, **overrides)


def _session(args: argparse.Namespace, candidates: list[Any] | None = None):  # noqa: ANN202
    """The Python API's Session on the experiment (the CLI is a thin layer over :mod:`sweeper.api`)."""
    from sweeper.api import Session

    exp = _experiment(args)
    if candidates is not None:
        exp = dataclasses.replace(exp, candidates=tuple(candidates))
    print(f"sweeper: preparing {exp.name} (model, calibration, FP32 reference)...", file=sys.stderr)
    return Session(exp, tracking=not getattr(args, "no_tracking", False), address=getattr(args, "address", None))


def _mlflow_line(s: Any) -> None:
    if s.tracker is not None:
        print(f"MLflow: {s.tracker.uri} (experiment {s.exp.name!r}; `sweeper ui` to browse)")


def step_command(name: str) -> Callable[[argparse.Namespace], int]:
    """The command of a registered step: prepare once, run the step, print its report."""
    def cmd(args: argparse.Namespace) -> int:
        from sweeper.cli.steps import STEPS

        entry = STEPS[name]
        with _session(args) as s:
            value = entry.run(s, args)
            print(entry.report(s, value))
            _mlflow_line(s)
        return 0

    return cmd


def _workflow_settings(exp: Any, args: argparse.Namespace) -> Any:
    """The experiment's ``workflow`` section with the command line's overrides."""
    over = {k: v for k, v in (("adaround", args.adaround), ("qat", args.qat),
                              ("latency_budget_ms", args.latency_budget)) if v is not None}
    return dataclasses.replace(exp.workflow, **over)


def print_workflow(s: Any, report: Any) -> None:
    """The workflow's decisions and where the accepted profile came from."""
    print("\nWorkflow - what each step found, and why it went on or stopped")
    for d in report.decisions:
        print(f"  - {d}")
    a = report.accepted
    if a is not None:
        lat = "" if a.est_latency_ms is None else f", est. {a.est_latency_ms:.4g} ms/sample"
        if a.measured_latency_ms is not None:
            lat += f", measured {a.measured_latency_ms:.4g} ms/sample"
        print(f"\nrecommended: {a.profile} from {a.step} ({s.exp.metric} {a.metric:.4f}, drop {a.drop:.4f}, "
              f"{a.bops_ratio:.2f}x w8a8 BOPs{lat}) -> {a.onnx}")
    print(f"workflow: {report.output}")


def cmd_run(args: argparse.Namespace) -> int:
    """The workflow (:mod:`sweeper.search.workflow`): Steps 1-3 with their stopping rules, then AdaRound and
    QAT where enabled; every step's report as it finishes, on one pool."""
    from sweeper.cli.steps import STEPS

    with _session(args) as s:
        settings = _workflow_settings(s.exp, args)

        def show(step: str, value: Any) -> None:
            print(STEPS[step].report(s, value))

        report = s.run(settings, fresh=args.fresh, show=show)
        print_workflow(s, report)
        _mlflow_line(s)
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from sweeper.config.paths import writable_dir_problem
    from sweeper.search.batch import experiment_files, format_summary, log_summary, run_batch, write_summary

    check_pool_arguments(args)
    files = experiment_files(args.experiments)
    out = Path(os.path.abspath(os.path.expanduser(args.output))) if args.output else None
    if out is not None and writable_dir_problem(out):
        raise SweeperError("--output", str(writable_dir_problem(out)))
    from sweeper.api import Session

    rows = run_batch(files, Session, pool_kind=args.pool, workers=args.workers, address=args.address,
                     tracking=not args.no_tracking, output=out)
    summary = (out or Path("runs")) / "batch_summary.json"
    write_summary(rows, summary)
    print("\nBatch - the workflow (sweeper run) on every model")
    print(format_summary(rows))
    print(f"\nsummary: {summary}")
    if not args.no_tracking:
        log_summary(rows, summary, None)
        print("MLflow: experiment 'sweeper-batch' holds the summary")
    return 0 if not any(r.error for r in rows) else 1


def _export_path(text: str) -> Path:
    """``--out``: a .onnx path whose folder exists or can be created and is writable (checked before any work)."""
    from sweeper.config.paths import writable_dir_problem

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


def cmd_export(args: argparse.Namespace) -> int:
    """One profile as QDQ + encodings, in this process (no pool): the options and the encodings file are checked
    before the model is prepared, the encodings against the model before anything is written."""
    from sweeper.export.encodings_io import read_encodings
    from sweeper.export.profile import encodings_profile, export_profile, resolve_profile
    from sweeper.model.session import describe_mode, reference_mode
    from sweeper.pipeline import Workspace

    out = _export_path(args.out)
    prec = precision_arg(args.precision, "--precision") if args.precision else None
    if args.encodings:
        try:
            read_encodings(args.encodings)
        except ValueError as exc:
            raise SweeperError("--encodings", str(exc)) from None
    ws = Workspace(_experiment(args))
    try:
        if args.encodings:
            profile = encodings_profile(ws.graph, ws.table, args.encodings, "--encodings")
        else:
            profile = resolve_profile(ws.graph, ws.table, prec, "--precision")
        _, model = export_profile(ws.graph, ws.table, profile, out)
    finally:
        ws.close()
    print(f"exported {profile.label()} -> {out} and {out.with_suffix('.encodings')}")
    print(f"it reproduces the simulation bit for bit under {describe_mode(reference_mode(model))} "
          "(sweeper.model.session.reference_session opens it so)")
    return 0


class _Stop(Exception):
    """Raised by the signal handlers of ``sweeper ui`` to leave the wait for the server."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def cmd_ui(args: argparse.Namespace) -> int:
    """Serve the store with a real ``mlflow server`` in its own process group; SIGTERM, SIGINT or SIGHUP stops
    the whole group (server, uvicorn workers, job runner), not just this process."""
    import subprocess

    from sweeper.config.paths import tracking_uri_problem
    from sweeper.tracking.server import server_command, stop_process_tree
    from sweeper.tracking.tracker import prepare_ui, resolve_uri

    uri = resolve_uri(args.uri)
    problem = tracking_uri_problem(uri)
    if problem:
        raise SweeperError("--uri", problem)
    free_port(args.port)
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
        sp.add_argument(flag, action=NotForExport, why=why, nargs=nargs)
    sp.set_defaults(func=cmd_export)


def _step_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """``run`` plus one subcommand per registered step (sweeper.cli.steps)."""
    from sweeper.cli.steps import STEPS

    sp = sub.add_parser("run", help="the workflow: Steps 1-3 with their stopping rules, AdaRound and QAT "
                                    "where enabled (workflow section)")
    common(sp)
    sp.add_argument("--adaround", action=argparse.BooleanOptionalAction, default=None,
                    help="Step 4 when the weights are the sensitive part (default: workflow.adaround)")
    sp.add_argument("--qat", action=argparse.BooleanOptionalAction, default=None,
                    help="Step 5 for a PyTorch model (default: workflow.qat)")
    sp.add_argument("--latency-budget", type=real(0, above=True, unit="milliseconds"), default=None, metavar="MS",
                    help="Step 2 stops only when its profile is estimated this fast (ms per sample)")
    sp.set_defaults(func=cmd_run)
    for name, entry in STEPS.items():
        sp = sub.add_parser(name, help=entry.help)
        common(sp)
        entry.add_arguments(sp)
        sp.set_defaults(func=step_command(name))


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema of the experiment file (for editors)."""
    import json

    from sweeper.config.schema import experiment_schema

    print(json.dumps(experiment_schema(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    import sweeper

    p = Parser(prog="sweeper", description="Post-training quantization sweeps for ONNX models.")
    p.add_argument("--version", action="version", version=f"sweeper {sweeper.__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def pool_options(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--pool", choices=["ray", "local"], help="worker pool (default: the experiment's, ray)")
        sp.add_argument("--workers", type=whole(1), help="number of parallel workers")
        sp.add_argument("--address", default=None, help="Ray cluster address (default: start a local runtime)")
        sp.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("experiment", help="experiment YAML file")
        sp.add_argument("--output", help="output directory (overrides the experiment file)")
        pool_options(sp)
        sp.add_argument("--max-drop", type=real(0), default=None,
                        help="allowed drop vs FP32 (overrides the experiment's target.max_drop)")
        sp.add_argument("--fresh", action="store_true",
                        help="start the step's study afresh (default: resume it, skipping evaluated profiles)")

    _step_parsers(sub, common)
    sp = sub.add_parser("batch", help="the workflow (sweeper run) on many models: a folder of experiment files, or a list")
    sp.add_argument("experiments", nargs="+", help="experiment YAML files or folders of them")
    sp.add_argument("--output", help="output root (each experiment writes OUTPUT/<name>)")
    pool_options(sp)
    sp.set_defaults(func=cmd_batch)
    _export_parser(sub)
    sp = sub.add_parser("schema", help="print the JSON Schema of the experiment file (for editor completion)")
    sp.set_defaults(func=cmd_schema)
    sp = sub.add_parser("ui", help="start the MLflow UI on 127.0.0.1 for the project's store")
    sp.add_argument("--uri", default=None, help="tracking store (default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    sp.add_argument("--port", type=whole(1, 65535), default=5000, help="port on 127.0.0.1 (default 5000)")
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
