"""What AMP's searches share: the state of evaluated profiles, the cost functions, the algorithm ``auto``
picks, the Pareto front, and the uniform candidates every algorithm compares with."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sweeper.cost.bops import profile_cost
from sweeper.pipeline import Workspace
from sweeper.quant.precision import Precision
from sweeper.quant.profile import Profile
from sweeper.search.evaluate import Evaluated
from sweeper.search.names import COSTS
from sweeper.search.step import Batch

AUTO_EXHAUSTIVE_MAX = 64  # "auto": greedy's phase 1 up to this many evaluations, the fast search beyond


def resolve_algorithm(algorithm: str, groups: int, candidates: int) -> str:
    """``auto``: the exhaustive greedy while its phase 1 (groups x (candidates - 1) + candidates evaluations) is
    at most ``AUTO_EXHAUSTIVE_MAX``, else ``fast``; any other algorithm as it is."""
    if algorithm != "auto":
        return algorithm
    return "greedy" if groups * (candidates - 1) + candidates <= AUTO_EXHAUSTIVE_MAX else "fast"


def cost_function(ws: Workspace, kind: str) -> Callable[[Profile], float]:
    """Relative cost of a profile (lower is cheaper)."""
    if kind == "bops":
        return lambda p: profile_cost(ws.graph, p).bops_ratio
    if kind == "bytes":  # model size + activation traffic, per sample
        model = ws.cost_model

        def nbytes(p: Profile) -> float:
            return sum(r["weight_bytes"] + r["activation_bytes"] for r in model.per_layer(p)) / 1e6
        return nbytes
    if kind == "latency":
        return ws.cost_model.latency_ms
    raise ValueError(f"unknown cost {kind!r}: expected one of {', '.join(COSTS)}")


def pareto_front(points: list[tuple[float, float, Any]]) -> list[tuple[float, float, Any]]:
    """Non-dominated (metric up, cost down) points, by increasing cost."""
    front: list[tuple[float, float, Any]] = []
    best = -math.inf
    for metric, cost, item in sorted(points, key=lambda t: (t[1], -t[0])):
        if metric > best:
            front.append((metric, cost, item))
            best = metric
    return front


@dataclass
class AMPState:
    """Everything evaluated so far, shared by the algorithms."""

    evaluated: dict[str, tuple[Profile, Evaluated]] = field(default_factory=dict)
    seeds: list[Profile] = field(default_factory=list)  # profiles a later search starts from (greedy's list)

    def add(self, ev: Evaluated, profile: Profile) -> None:
        """Record an evaluated profile. One asked for again under another name (Optuna asking for the uniform
        candidates or greedy points it was seeded with) keeps its first record, whose name says which search
        evaluated it (the uniform comparison and the latency check know a uniform profile by its content:
        :attr:`~sweeper.quant.profile.Profile.uniform_precision`)."""
        self.evaluated.setdefault(profile.key, (profile, ev))

    def metric(self, profile: Profile) -> float | None:
        got = self.evaluated.get(profile.key)
        return None if got is None else got[1].metric



class UniformSearch:
    """The uniform candidates, once (what every algorithm compares with; greedy's phase 1 includes them)."""

    def __init__(self, groups: list[str], candidates: list[Precision]) -> None:
        self.profiles = {f"uniform:{c.name}": Profile.uniform(groups, c) for c in candidates}
        self.asked = False

    def propose(self, state: AMPState, ok: Callable[[float], bool]) -> Batch | None:
        if self.asked:
            return None
        self.asked = True
        return Batch(self.profiles)

    def observe(self, results: dict[str, Evaluated], profiles: dict[str, Profile]) -> None:
        pass

    def report(self, state: AMPState, ok: Callable[[float], bool]) -> None:
        return None
