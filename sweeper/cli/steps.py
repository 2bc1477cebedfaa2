"""The workflow steps as commands: each step's options, how the CLI runs it on a Session, what it prints.

A step is one module with a :class:`~sweeper.search.step.Step` subclass plus one :class:`StepCommand` here:
its command-line options, how to build it from them, and what to print when it is done. The CLI builds a
subcommand per entry and runs it through the same :class:`~sweeper.api.Session` the Python API uses, so a
new step needs no change to the runner or the CLI.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sweeper.cli.options import amp_candidates, percentages, precision_arg, real, whole
from sweeper.search.names import ALGORITHMS, COSTS, OBJECTIVES, RANKINGS


@dataclass(frozen=True)
class StepCommand:
    """One workflow step as a command: ``run(session, args)`` returns what ``report(session, value)`` prints."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[Any, argparse.Namespace], Any]
    report: Callable[[Any, Any], str]


# -- baseline -----------------------------------------------------------------------------------------
def _baseline_report(s: Any, rep: Any) -> str:
    from sweeper.search.baseline import format_table

    exp = s.ws.exp
    lines = [f"\nStep 1 - baseline precision: {exp.name} ({exp.metric}, max drop {exp.max_drop})",
             format_table(rep, exp.metric), f"\n{rep.interpretation}"]
    if rep.chosen:
        lines.append(f"chosen: {rep.chosen}  -> {rep.output / (rep.chosen + '.onnx')}")
    lines.append(f"results: {rep.output / 'results.json'}")
    return "\n".join(lines)


# -- analyze ------------------------------------------------------------------------------------------
def _rank_arg(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--rank", default="enable_one", choices=RANKINGS,
                    help="sensitivity ranking (default enable_one)")


def _analyze_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--precision", "--base", dest="precision", default="w8a8",
                    help="the uniform precision to analyse (default w8a8; --base is its older name)")
    _rank_arg(sp)


def _analyze_report(s: Any, rep: Any) -> str:
    from sweeper.search.analyzer import format_analysis

    d = rep.doc
    return (f"\nStep 2 - sensitivity analysis: {s.ws.exp.name} at {d['base']} (ranked by {d['ranking']})\n"
            f"{format_analysis(d)}\n\nreport: {rep.output / 'report.html'}\nresults: {rep.output / 'sensitivity.json'}")


# -- litemp -------------------------------------------------------------------------------------------
def _litemp_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--precision", "--base", dest="precision", default="w8a8",
                    help="the uniform precision the groups are flipped from (default w8a8; --base is its older name)")
    sp.add_argument("--high", default="fp16", help="precision of the flipped groups (default fp16)")
    sp.add_argument("--k", default="0,5,10,15,20,30,50,75,100",
                    help="percentages of groups to flip, tried in order (refined where the metric jumps)")
    _rank_arg(sp)


def _litemp_run(s: Any, a: argparse.Namespace) -> Any:
    return s.litemp(precision_arg(a.precision, "--precision"), precision_arg(a.high, "--high"), percentages(a.k), a.rank,
                    fresh=a.fresh)


def _litemp_report(s: Any, rep: Any) -> str:
    from sweeper.search.litemp import format_litemp

    exp = s.ws.exp
    first = rep.points[0] if rep.points else None
    head = (f"\nStep 2 - LiteMP: {exp.name}, top-k % of groups flipped (ranked by {rep.ranking}; FP32 "
            f"{s.ws.fp32_metric:.4f}, max drop {exp.max_drop})")
    lines = [head, format_litemp(rep, exp.metric)]
    if rep.chosen:
        lines.append(f"\nchosen: k = {rep.chosen.k:g} % ({len(rep.chosen.flipped)} groups) -> {rep.chosen.result.onnx}")
    elif first is not None:
        lines.append(f"\nno share of groups meets the target, up to {max(p.k for p in rep.points):g} %: try a higher "
                     "--high precision, or AMP")
    lines.append(f"results: {rep.output / 'results.json'}")
    return "\n".join(lines)


# -- amp ----------------------------------------------------------------------------------------------
def _amp_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--algorithm", default="auto", choices=ALGORITHMS,
                    help="search (default auto: the exhaustive greedy while its phase 1 is at most 64 "
                         "evaluations, fast beyond)")
    sp.add_argument("--candidates", help="comma-separated precisions (default: the experiment's candidates)")
    sp.add_argument("--cost", default="bops", choices=COSTS,
                    help="cost to minimise (default bops; latency: the CostModel's estimate)")
    sp.add_argument("--objective", default="multi", choices=OBJECTIVES,
                    help="Optuna: multi (NSGA-II on metric and cost, default) or constrained (TPE on cost)")
    sp.add_argument("--trials", type=whole(1), default=100, help="Optuna trial budget (default 100)")
    sp.add_argument("--timeout", type=real(0, above=True), default=None, help="Optuna time budget in seconds")


def _amp_run(s: Any, a: argparse.Namespace) -> Any:
    return s.amp(amp_candidates(a.candidates), a.algorithm, a.cost, a.objective, a.trials, a.timeout, fresh=a.fresh)


def _amp_report(s: Any, rep: Any) -> str:
    from sweeper.report.amp import format_amp

    return format_amp(rep.doc, s.ws.exp.metric, rep.output)


# -- qat ----------------------------------------------------------------------------------------------
def _qat_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--profile", default="w4a8", help="starting profile: a precision (default w4a8), an AIMET "
                                                      "encodings file, or an AMP results.json (its accepted profile)")
    sp.add_argument("--epochs", type=whole(1), help="training epochs (default: qat.epochs of the experiment, 4)")
    sp.add_argument("--lr", type=real(0, above=True), help="learning rate (default: qat.lr, 1e-4)")
    sp.add_argument("--batch-size", type=whole(1), help="training batch size (default: qat.batch_size, 64)")


def _qat_report(s: Any, rep: Any) -> str:
    from sweeper.search.qat import format_qat

    return format_qat(rep.doc, s.ws.exp.metric)


# -- adaround -----------------------------------------------------------------------------------------
def _adaround_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--precision", default="w4a8", help="uniform precision to AdaRound (default w4a8)")
    sp.add_argument("--iterations", type=whole(1), default=1000, help="optimisation steps per layer (default 1000)")


def _adaround_report(s: Any, doc: Any) -> str:
    from sweeper.search.adaround import format_adaround

    return f"\nStep 4 - AdaRound: {s.ws.exp.name}\n{format_adaround(doc)}\nresults: {s.exp.output / 'adaround'}"


STEPS: dict[str, StepCommand] = {
    "baseline": StepCommand("baseline", "Step 1: simulate every candidate precision", lambda sp: None,
                            lambda s, a: s.baseline(fresh=a.fresh), _baseline_report),
    "analyze": StepCommand("analyze", "Step 2: per-layer sensitivity analysis (report with plots)", _analyze_args,
                           lambda s, a: s.analyze(precision_arg(a.precision, "--precision"), a.rank, fresh=a.fresh),
                           _analyze_report),
    "litemp": StepCommand("litemp", "Step 2: flip the top-k %% most sensitive groups to a higher precision",
                          _litemp_args, _litemp_run, _litemp_report),
    "amp": StepCommand("amp", "Step 3: automatic mixed precision (greedy, Optuna, or both)", _amp_args, _amp_run,
                       _amp_report),
    "adaround": StepCommand("adaround", "Step 4: AdaRound (learned weight rounding) at one precision, kept when it "
                                        "evaluates better", _adaround_args,
                            lambda s, a: s.adaround(precision_arg(a.precision, "--precision"), a.iterations,
                                                    fresh=a.fresh), _adaround_report),
    "qat": StepCommand("qat", "Step 5: quantization-aware training of a profile, exported as QDQ", _qat_args,
                       lambda s, a: s.qat(a.profile, epochs=a.epochs, lr=a.lr, batch_size=a.batch_size, fresh=a.fresh),
                       _qat_report),
}

__all__ = ["STEPS", "StepCommand"]
