"""What every worker pool shares with its callers: the :class:`Result` of one evaluation, the protocol of the
factory that builds a worker's object, and :class:`PoolClosed`. Kept apart so the pools and the front door
(:mod:`sweeper.cluster.pool`) import it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from sweeper.quant.profile import Profile


@dataclass
class Result:
    """One evaluated profile as a step sees it: metric, seconds, and the worker (name, Ray node, peak RSS)."""

    profile: Profile
    metric: float
    eval_seconds: float
    worker: str = ""
    node: str = ""  # Ray node id ("" in process)
    peak_rss_mb: float = 0.0
    samples: int | None = None  # samples evaluated (None: a user metric reading its own data)
    total: int | None = None  # samples in the evaluation data
    stopped: bool = False  # stopped early: it cannot meet the target (sweeper.eval.early)


class WorkerFactory(Protocol):
    """How a pool builds the object its workers host: ``factory(spec, name, exchange)`` (exchange None in process)
    (:class:`sweeper.replica.Replica`). Its methods are what ``map_calls`` calls by name; its ``evaluate``
    answers with an object carrying ``profile, metric, seconds, worker, node, peak_rss_mb, store``."""

    def __call__(self, spec: Any, name: str, exchange: Any) -> Any: ...


def result_from(ev: Any) -> Result:
    """The Result of what a worker's ``evaluate`` answered."""
    return Result(Profile.from_json(ev.profile), ev.metric, ev.seconds, ev.worker, ev.node, ev.peak_rss_mb,
                  getattr(ev, "samples", None), getattr(ev, "total", None), bool(getattr(ev, "stopped", False)))


class PoolClosed(RuntimeError):
    """A call on a pool that is closed or closing (the step failed, or Ctrl-C)."""



__all__ = ["PoolClosed", "Result", "WorkerFactory", "result_from"]
