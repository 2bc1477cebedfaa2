"""Evaluations that stop early: the one definition of when a profile's evaluation may stop.

A profile is evaluated batch by batch in the data's fixed order. After each batch the *bound* is the best
final metric the remaining samples could still give; once the bound itself misses the target
(:meth:`~sweeper.eval.target.Target.meets`), the profile cannot meet it and its evaluation stops. The bound
is certain, never an estimate:

* a mean of per-sample scores in ``[lo, hi]`` (``top1``: 0/1 per label; ``cosine``: [-1, 1] per sample; a
  user metric that declares its scores, :func:`per_sample_metric`): the scores so far plus the best score
  for every remaining sample;
* ``sqnr``: 10 log10(total signal / noise so far). The FP32 reference gives the total signal before any
  batch runs, and noise only grows.

The metric over the samples a stopped evaluation ran misses the target too (it is never above the bound,
or below it when lower is better), so a stopped profile fails whichever of the two a step reads. A stopped
evaluation is never a result that meets the target, is never accepted and never on a Pareto front;
it is recorded as stopped with the samples it used (``samples_evaluated``, ``stopped_early``), and a step
that needs the full metric of a profile evaluates it again.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Outcome:
    """One evaluation: the metric (over all samples, or over ``samples`` when stopped), samples evaluated
    of ``total`` (None: a user metric that reads its data itself), and, when stopped, the bound that missed."""

    metric: float
    samples: int | None = None
    total: int | None = None
    stopped: bool = False
    bound: float | None = None


def mean_bound(score_sum: float, counted: int, total: int, best_score: float) -> float:
    """The best final mean of ``total`` per-sample scores when ``counted`` of them sum to ``score_sum`` and
    each of the others can score at most ``best_score`` (the highest score; the lowest when lower is better)."""
    return (score_sum + (total - counted) * best_score) / total


def sqnr_db(signal: float, noise: float, cap: float) -> float:
    """10 log10(signal / noise) clipped to +-``cap`` dB (non-finite sums: -cap; no noise: +cap)."""
    if not math.isfinite(noise) or not math.isfinite(signal):
        return -cap
    if noise == 0.0:
        return cap
    if signal == 0.0:
        return -cap
    return float(min(max(10.0 * math.log10(signal / noise), -cap), cap))


def per_sample_metric(lo: float, hi: float) -> Callable[[F], F]:
    """Declare a user metric's per-sample scores, so its evaluations can stop early: decorated, ``fn(run,
    data)`` returns one score in ``[lo, hi]`` per sample of ``data`` (a 1-D array) and the metric is their mean.
    sweeper then calls it on consecutive slices of the data (a dict of arrays sliced along axis 0, or a list
    sliced), so the data the loader returns must be one of those."""
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"per_sample_metric needs finite lo < hi, got {lo}, {hi}")

    def mark(fn: F) -> F:
        fn.sweeper_score_range = (float(lo), float(hi))  # type: ignore[attr-defined]
        return fn

    return mark


__all__ = ["Outcome", "mean_bound", "per_sample_metric", "sqnr_db"]
