"""The Step contract and the one runner every workflow step goes through.

A step (baseline, analyze, LiteMP, AMP, ...) only decides *which* profiles to evaluate and what its result
is, in the spirit of Ray Tune's ``Searcher.suggest``/``on_trial_complete`` and Optuna's ask/tell:

* :meth:`Step.propose` returns the next :class:`Batch` of named profiles (evaluated together, optionally
  from the stored activations of a shared reference), a :class:`Stream` (profiles asked one at a time
  whenever a worker is idle), or ``None`` when the step has seen enough;
* :meth:`Step.observe` receives what was evaluated;
* :meth:`Step.finish` builds the step's result document (and may export, measure or draw on the pool
  through the :class:`StepContext`).

:func:`run_step` owns everything around it: the staging folder that moves into place only on success, the
step's resumable study and MLflow parent run (the :class:`~sweeper.search.evaluate.Sweep`), progress bars,
the results file, the final paths, and cleanup on failure or Ctrl-C. A new step is one module with a
``Step`` subclass plus one entry in :mod:`sweeper.cli.steps`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from sweeper.pipeline import StagedOutput, Workspace
from sweeper.quant.profile import Profile
from sweeper.search.evaluate import Evaluated, Sweep, write_json
from sweeper.tracking.tracker import Tracker


@dataclass
class Batch:
    """Profiles to evaluate together (in parallel); ``reference``: the profile most of them share a
    prefix with (workers run them from its stored activations); ``early``: the step needs only whether each
    meets the target (pass/fail probes), so each evaluation stops as soon as it cannot (sweeper.eval.early)."""

    profiles: dict[str, Profile]
    reference: Profile | None = None
    early: bool = False


@dataclass
class Stream:
    """Profiles proposed one at a time as workers free up (asynchronous ask/tell); ``next_profile()``
    returns ``(name, profile)`` or None when the budget is spent."""

    next_profile: Callable[[], tuple[str, Profile] | None]
    total: int | None = None


@dataclass
class PoolNeeds:
    """What the step's workers must be able to do beyond the candidates (see ``Workspace.pool``)."""

    extra_precisions: tuple[str, ...] = ()
    probes: bool = False
    reuse: bool = False

    def merge(self, other: PoolNeeds) -> PoolNeeds:
        return PoolNeeds(tuple(dict.fromkeys(self.extra_precisions + other.extra_precisions)),
                         self.probes or other.probes, self.reuse or other.reuse)


@dataclass
class StepOutput:
    """A finished step: ``doc`` is written to ``filename`` in the step folder; ``metrics`` go on the MLflow
    parent run together with ``artifacts`` (file names in the step folder); ``value`` is what the Python API
    returns (the doc itself unless a step has a richer object)."""

    doc: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)
    filename: str = "results.json"
    value: Any = None


@dataclass
class StepContext:
    """What a step may use while it finishes: the evaluation path (exports, MLflow attachments), the pool
    (latency, plots), and the folders."""

    ws: Workspace
    sweep: Sweep
    pool: Any
    staging: Path
    final: Path

    def final_path(self, name: str) -> str:
        """Where a file written into the staging folder will be once the step succeeds."""
        return str(self.final / name)


class Step:
    """Base class of workflow steps (see the module docstring)."""

    name: ClassVar[str]  # folder, study and MLflow step name
    strategy: str = ""  # MLflow/strategy label; defaults to the name
    export_each: ClassVar[bool] = True  # export every evaluated profile (QDQ + encodings)

    def params(self) -> dict[str, Any]:
        """Settings logged on the MLflow parent run."""
        return {}

    def pool_needs(self) -> PoolNeeds:
        return PoolNeeds()

    def propose(self) -> Batch | Stream | None:
        raise NotImplementedError

    def observe(self, results: dict[str, Evaluated], profiles: dict[str, Profile]) -> None:
        """Results of the last proposal (a Stream delivers one profile per call)."""

    def finish(self, ctx: StepContext) -> StepOutput:
        raise NotImplementedError


def _final_paths(doc: Any, staging: str, final: str) -> Any:
    """``doc`` with every path into the staging folder pointing where it will be after the move."""
    if isinstance(doc, dict):
        return {k: _final_paths(v, staging, final) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_final_paths(v, staging, final) for v in doc]
    if isinstance(doc, str) and doc.startswith(staging):
        return final + doc[len(staging):]
    return doc


def _drive(step: Step, sweep: Sweep, pool: Any) -> None:
    """Propose, evaluate, observe until the step has seen enough."""
    while (proposal := step.propose()) is not None:
        if isinstance(proposal, Stream):
            for ev, profile in sweep.stream(pool, proposal.next_profile, total=proposal.total):
                step.observe({ev.name: ev}, {ev.name: profile})
        else:
            results = sweep.evaluate(pool, proposal.profiles, reference=proposal.reference, early=proposal.early)
            step.observe(results, proposal.profiles)


def run_step(step: Step, ws: Workspace, pool: Any, tracker: Tracker | None, fresh: bool = False) -> StepOutput:
    """Run ``step`` end to end (see the module docstring). On any failure (or Ctrl-C) the staging folder is
    removed and what was evaluated stays in the study, so a rerun resumes."""
    out = StagedOutput(ws.exp.output, step.name)
    try:
        sweep = Sweep(ws, step.name, step.strategy or step.name, out.path, tracker, params=step.params(),
                      fresh=fresh, export=step.export_each)
        _drive(step, sweep, pool)
        result = step.finish(StepContext(ws, sweep, pool, out.path, out.final))
        result.doc.update(_worker_figures(sweep, pool))
        result.doc["prepare_seconds"] = dict(ws.prepare_seconds)  # the driver's preparation of the model
        for name, ev in sweep.results.items():  # the records the API returns point at the final folder
            sweep.results[name] = _relocate(ev, str(out.path), str(out.final))
        result.doc = _final_paths(result.doc, str(out.path), str(out.final))
        write_json(out.path / result.filename, result.doc)
        sweep.flush()  # exports and records land in the staging folder before it moves
        final = out.commit()
        sweep.finish(result.metrics, [final / result.filename] + [final / a for a in result.artifacts])
    except BaseException:
        out.abort()
        raise
    if result.value is None:
        result.value = result.doc
    else:
        result.value = _final_paths(result.value, str(out.path), str(final))
    return result


FP32_TIMINGS = 3  # FP32 evaluations timed at the end of a step (their median is the unit of every ratio)
FP32_TIMING_BUDGET_S = 2.0  # ... or fewer, once they have taken this long (large models)


def _worker_figures(sweep: Sweep, pool: Any) -> dict[str, Any]:
    """What the step's workers cost, for reading ratios from any run: the FP32 evaluation timed like every
    profile's ``eval_seconds`` (a worker of this pool, its threads, the same data and metric; the median of up
    to ``FP32_TIMINGS`` runs: one run of a millisecond model varied 10x between steps) and each worker's peak
    resident memory. Nothing when no worker started (every profile came from the study)."""
    if getattr(pool, "pool", None) is None or not sweep.peak_rss_mb:
        return {}
    times: list[float] = []
    try:
        while len(times) < FP32_TIMINGS and sum(times) < FP32_TIMING_BUDGET_S:
            (_, (_metric, seconds)), = pool.map_calls("fp32_eval", [()])
            times.append(float(seconds))
    except Exception:  # noqa: BLE001 - a figure, not a result: the step's results stand without it
        if not times:
            return {"worker_peak_rss_mb": dict(sweep.peak_rss_mb)}
    return {"fp32_eval_seconds": round(float(np.median(times)), 6), "fp32_eval_runs": len(times),
            "worker_peak_rss_mb": dict(sweep.peak_rss_mb)}


def _relocate(ev: Evaluated, staging: str, final: str) -> Evaluated:
    for attr in ("onnx", "encodings"):
        v = getattr(ev, attr)
        if v and v.startswith(staging):
            setattr(ev, attr, final + v[len(staging):])
    return ev


__all__ = ["Batch", "PoolNeeds", "Step", "StepContext", "StepOutput", "Stream", "run_step"]
