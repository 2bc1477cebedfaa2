"""Step 3: automatic mixed precision (AMP).

* ``greedy``: the semantics of AIMET's ``choose_mixed_precision``. Phase 1 evaluates, for every quantizer
  group and every candidate other than the baseline (the costliest candidate), the metric with only that
  group at that candidate. Phase 2 orders the (group, candidate) pairs by sensitivity (then by cost saved),
  builds the Pareto list by lowering groups in that order, and searches it for the lowest-cost entry that
  meets ``FP32 - max_drop``, evaluating entries lazily (a parallel k-ary search: one probe per worker).
* ``fast``: the same Pareto-list search without phase 1's groups x candidates evaluations. Pairs are ranked
  by the quantization noise they add (NSR of the group's weights, weighted by the power of the inputs they
  multiply, and of its input activations, from one FP32 run on a few calibration samples:
  :func:`~sweeper.search.analyzer.quantization_noise`) per cost saved, each group walking down its lower
  convex hull; full evaluations then search that list (k-ary, one probe per worker and round, until the
  answer could get at most 2 % cheaper), optional repair rounds try further moves on the answer, and the
  uniform candidates cheaper than the answer are evaluated last unless a failing profile dominates them.
  About log(list length) rounds instead of groups x candidates evaluations; every answer is a full evaluation.
* ``optuna``: one categorical parameter per group; NSGA-II on (metric, cost) or TPE on cost with the
  accuracy threshold as a constraint; seeded with the greedy Pareto points; asynchronous ask/tell over the
  worker pool; budget by trials and/or time; resumable from its storage.

Greedy and Optuna evaluate every uniform candidate too, fast those cheaper than its answer, so the answer is
never costlier than the cheapest uniform candidate that passes (for fast: by the same monotony its list
search assumes, when a failing profile already gives every group at least that candidate's precision).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sweeper.cost.bops import profile_cost
from sweeper.cost.measure import LatencyStats, measure_interleaved
from sweeper.pipeline import Workspace
from sweeper.quant.precision import Precision
from sweeper.quant.profile import Profile
from sweeper.replica import render_in_background
from sweeper.search.evaluate import Evaluated, Sweep
from sweeper.search.names import ALGORITHMS, COSTS, OBJECTIVES
from sweeper.search.step import Batch, PoolNeeds, Step, StepContext, StepOutput, Stream, run_step
from sweeper.search.study import prepared_storage
from sweeper.tracking.tracker import Tracker

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
        self.evaluated[profile.key] = (profile, ev)

    def metric(self, profile: Profile) -> float | None:
        got = self.evaluated.get(profile.key)
        return None if got is None else got[1].metric


class GreedyAMP:
    """AIMET's two-phase greedy search (see the module docstring)."""

    def __init__(self, ws: Workspace, candidates: list[Precision], cost: Callable[[Profile], float],
                 workers: int) -> None:
        self.ws = ws
        self.groups = [g.name for g in ws.graph.groups]
        self.candidates = candidates
        self.baseline = max(candidates, key=lambda p: (p.bops_factor, p.is_float))
        self.cost = cost
        self.workers = max(1, workers)
        self.base_profile = Profile.uniform(self.groups, self.baseline)
        self.pareto_list: list[Profile] = []
        self.ordered_pairs: list[tuple[str, str, float]] = []
        self._phase1_done = False

    def phase1(self) -> dict[str, Profile]:
        out = {f"uniform:{c.name}": Profile.uniform(self.groups, c) for c in self.candidates}
        for g in self.groups:
            for c in self.candidates:
                if c != self.baseline:
                    out[f"p1:{c.name}:{g}"] = self.base_profile.with_groups({g: c})
        return out

    def build_pareto_list(self, state: AMPState) -> list[Profile]:
        higher = self.ws.exp.higher_is_better
        base_cost = self.cost(self.base_profile)
        pairs = []
        for g in self.groups:
            for c in self.candidates:
                if c == self.baseline:
                    continue
                m = state.metric(self.base_profile.with_groups({g: c}))
                assert m is not None
                saved = base_cost - self.cost(self.base_profile.with_groups({g: c}))
                pairs.append((g, c, m if higher else -m, saved))
        pairs.sort(key=lambda t: (-t[2], -t[3], t[0], t[1].name))
        current = self.base_profile
        plist = [current]
        for g, c, _m, _ in pairs:
            if self.cost(current.with_groups({g: c})) < self.cost(current):
                current = current.with_groups({g: c})
                plist.append(current)
        self.ordered_pairs = [(g, c.name, m if higher else -m) for g, c, m, _ in pairs]
        self.pareto_list = plist
        state.seeds = list(plist)
        return plist

    def _range(self, state: AMPState, ok: Callable[[float], bool]) -> tuple[int, int] | None:
        """``(lo, hi)``: the Pareto list's entry ``lo`` is known to pass and ``hi:`` are known to fail (the
        list is taken as monotone, as AIMET's binary search takes it); None when even entry 0 fails."""
        plist = self.pareto_list
        first = state.metric(plist[0]) if plist else None
        if first is None or not ok(first):
            return None
        lo, hi = 0, len(plist)
        for i in range(1, hi):
            m = state.metric(plist[i])
            if m is None:
                continue
            if not ok(m):
                hi = i
                break
            lo = i
        return lo, hi

    def propose(self, state: AMPState, ok: Callable[[float], bool]) -> Batch | None:
        """Phase 1 first; then the lowest-cost passing entry of the Pareto list by a parallel k-ary search
        over its index: entries already evaluated (phase 1's single-group profiles, the uniform profiles)
        narrow the range for free; each round evaluates one entry per worker, evenly spaced among the
        entries still unknown."""
        if not self._phase1_done:
            self._phase1_done = True
            return Batch(self.phase1(), reference=self.base_profile)
        if not self.pareto_list:
            self.build_pareto_list(state)
        rng = self._range(state, ok)
        if rng is None:
            return None
        lo, hi = rng
        unknown = [i for i in range(lo + 1, hi) if state.metric(self.pareto_list[i]) is None]
        if not unknown:
            return None
        k = min(self.workers, len(unknown))
        probes = sorted({unknown[round((j + 1) * (len(unknown) + 1) / (k + 1)) - 1] for j in range(k)})
        return Batch({f"p2:{i}": self.pareto_list[i] for i in probes}, reference=self.base_profile)

    def accepted(self, state: AMPState, ok: Callable[[float], bool]) -> Profile | None:
        rng = self._range(state, ok)
        return None if rng is None else self.pareto_list[rng[0]]

    def observe(self, results: dict[str, Evaluated], profiles: dict[str, Profile]) -> None:
        """Nothing beyond the shared state (the Pareto list is built once phase 1 is in)."""

    def report(self, state: AMPState, ok: Callable[[float], bool]) -> dict[str, Any]:
        acc = self.accepted(state, ok)
        return {"baseline": self.baseline.name, "phase1_evaluations": len(self.phase1()),
                "pareto_list": [{"index": i, "cost": self.cost(p), "metric": state.metric(p), "profile": p.label()}
                                for i, p in enumerate(self.pareto_list)],
                "accepted": acc.label() if acc else None}


def pair_savings(ws: Workspace, cost_name: str, cost: Callable[[Profile], float], base: Profile,
                 candidates: list[Precision]) -> dict[tuple[str, str], float]:
    """``(group, candidate name) -> cost saved`` by setting only that group of ``base`` to the candidate. BOPs
    directly from the groups' MACs (the same sum as :func:`~sweeper.cost.bops.profile_cost`, without a
    profile per pair: hundreds of groups x candidates profiles cost seconds); other costs by evaluating them."""
    groups = ws.graph.groups
    if cost_name == "bops":
        ref = sum(g.macs for g in groups) * 64.0
        return {(g.name, c.name): g.macs * (base[g.name].bops_factor - c.bops_factor) / ref if ref else 0.0
                for g in groups for c in candidates}
    base_cost = cost(base)
    return {(g.name, c.name): base_cost - cost(base.with_groups({g.name: c})) for g in groups for c in candidates}


def at_least(p: Precision, q: Precision) -> bool:
    """Whether ``p`` is at least as precise as ``q`` on both sides (float16 counts as 16 bits, FP32 as 32)."""
    return p.weight_bits >= q.weight_bits and p.act_bits >= q.act_bits and (p.is_float or not q.is_float)


def noise_ordered_moves(groups: list[str], candidates: list[Precision], baseline: Precision,
                        noise: dict[tuple[str, str], float], saved: dict[tuple[str, str], float]
                        ) -> list[tuple[str, Precision, float]]:
    """Every group's moves from the baseline down its lower convex hull of (cost saved, noise added), merged
    by noise added per cost saved (the greedy of a multiple-choice knapsack): ``(group, candidate, slope)``.
    Along one group's hull the slopes only grow, so the merge keeps each group's moves in order."""
    moves: list[tuple[float, float, int, str, Precision]] = []
    for gi, g in enumerate(groups):
        at_cost, at_noise = 0.0, noise[(g, baseline.name)]
        cheaper = [c for c in candidates if c != baseline and saved[(g, c.name)] > 0]
        while True:
            steps = [((noise[(g, c.name)] - at_noise) / (saved[(g, c.name)] - at_cost), c) for c in cheaper
                     if saved[(g, c.name)] > at_cost]
            if not steps:
                break
            slope, c = min(steps, key=lambda t: (t[0], -saved[(g, t[1].name)], t[1].name))
            moves.append((slope, -(saved[(g, c.name)] - at_cost), gi, g, c))
            at_cost, at_noise = saved[(g, c.name)], noise[(g, c.name)]
    moves.sort(key=lambda t: (t[0], t[1], t[2]))
    return [(g, c, slope) for slope, _, _, g, c in moves]


class FastAMP:
    """Greedy AMP without phase 1's evaluations (see the module docstring): the Pareto list lowers groups in
    the order of :func:`noise_ordered_moves` on :func:`~sweeper.search.analyzer.quantization_noise`; full
    evaluations find its cheapest passing entry by a parallel k-ary search (one probe per worker and round,
    entry 0 not assumed to pass; it stops once the unknown entries could make the answer at most
    ``cost_tolerance`` cheaper), then ``repair_rounds`` rounds try further moves on top of the answer; the
    uniform candidates cheaper than the answer are evaluated last (never a costlier answer than they give)."""

    def __init__(self, ws: Workspace, candidates: list[Precision], cost: Callable[[Profile], float],
                 workers: int, repair_rounds: int = 0, cost_tolerance: float = 0.02, cost_name: str = "") -> None:
        self.ws, self.candidates, self.cost, self.cost_name = ws, candidates, cost, cost_name
        self.groups = [g.name for g in ws.graph.groups]
        self.baseline = max(candidates, key=lambda p: (p.bops_factor, p.is_float))
        self.base_profile = Profile.uniform(self.groups, self.baseline)
        self.workers = max(1, workers)
        self.repair_rounds = repair_rounds
        self.cost_tolerance = cost_tolerance  # relative: stop once the answer can get at most this much cheaper
        self.stopped_within_tolerance = False
        self.pareto_list: list[Profile] = []
        self.list_costs: list[float] = []
        self._keys: list[str] = []
        self.moves: list[tuple[str, Precision, float]] = []  # the move that made entry i + 1
        self.noise_seconds = 0.0
        self.repairs: list[dict[str, Any]] = []
        self.skipped_uniform: list[str] = []  # uniform candidates a failing profile showed to fail
        self._stage = "search"
        self._repair_from = 0  # index into self.moves the next repair round starts at
        self._answer: Profile | None = None

    def build_pareto_list(self) -> list[Profile]:
        """The noise estimate (one FP32 run) and the Pareto list it orders."""
        from sweeper.search.analyzer import quantization_noise

        t0 = time.perf_counter()
        noise = quantization_noise(self.ws, self.candidates)
        self.noise_seconds = time.perf_counter() - t0
        saved = pair_savings(self.ws, self.cost_name, self.cost, self.base_profile, self.candidates)
        ordered = noise_ordered_moves(self.groups, self.candidates, self.baseline, noise, saved)
        at = {g: self.baseline for g in self.groups}
        current, plist, moves = self.base_profile, [self.base_profile], []
        costs = [self.cost(self.base_profile)]
        for g, c, slope in ordered:  # costs add up over groups: each move changes one group's share
            gain = saved[(g, c.name)] - saved[(g, at[g].name)]
            if gain > 1e-12 * max(1.0, abs(costs[0])):
                at[g] = c
                current = current.with_groups({g: c})
                plist.append(current)
                costs.append(costs[-1] - gain)
                moves.append((g, c, slope))
        self.pareto_list, self.moves, self.list_costs = plist, moves, costs
        self._keys = [p.key for p in plist]
        return plist

    def bounds(self, state: AMPState, ok: Callable[[float], bool]) -> tuple[int, int]:
        """``(lo, hi)``: entry ``lo`` is the cheapest known to pass (-1: none yet), ``hi`` the first known to
        fail after it (the list's length: none); between them the list is taken as monotone."""
        metrics = [None if (got := state.evaluated.get(k)) is None else got[1].metric for k in self._keys]
        lo = max((i for i, m in enumerate(metrics) if m is not None and ok(m)), default=-1)
        hi = next((i for i in range(lo + 1, len(metrics)) if metrics[i] is not None and not ok(metrics[i])),
                  len(metrics))
        return lo, hi

    def _search_probes(self, state: AMPState, ok: Callable[[float], bool]) -> dict[str, Profile]:
        lo, hi = self.bounds(state, ok)
        unknown = [i for i in range(lo + 1, hi) if self._keys[i] not in state.evaluated]
        if not unknown:
            return {}
        if lo >= 0:  # what is left to win is within the tolerance: a round would cost more than it can save
            best, floor = self.list_costs[lo], self.list_costs[unknown[-1]]
            if best - floor <= self.cost_tolerance * best:
                self.stopped_within_tolerance = True
                return {}
        k = min(self.workers, len(unknown))
        probes = sorted({unknown[round((j + 1) * (len(unknown) + 1) / (k + 1)) - 1] for j in range(k)})
        return {f"fast:{i}": self.pareto_list[i] for i in probes}

    def _repair_probes(self, state: AMPState, answer: Profile) -> dict[str, Profile]:
        """The next moves of the list that make ``answer`` cheaper, one per worker, not yet evaluated."""
        out: dict[str, Profile] = {}
        while self._repair_from < len(self.moves) and len(out) < self.workers:
            g, c, _ = self.moves[self._repair_from]
            self._repair_from += 1
            p = answer.with_groups({g: c})
            if self.cost(p) < self.cost(answer) and state.metric(p) is None:
                out[f"repair:{g}:{c.name}"] = p
        return out

    def _uniform_probes(self, state: AMPState, ok: Callable[[float], bool], answer: Profile | None
                        ) -> dict[str, Profile]:
        """Uniform candidates cheaper than the answer, not evaluated yet, unless a failing profile gives every
        group at least its precision (then it fails too, by the monotony the list search already assumes)."""
        limit = math.inf if answer is None else self.cost(answer)
        failing = [p for p, ev in state.evaluated.values() if not ok(ev.metric)]
        out: dict[str, Profile] = {}
        for c in self.candidates:
            p = Profile.uniform(self.groups, c)
            if state.metric(p) is not None or self.cost(p) >= limit:
                continue
            if any(all(at_least(f[g], c) for g in self.groups) for f in failing):
                self.skipped_uniform.append(c.name)
                continue
            out[f"uniform:{c.name}"] = p
        return out

    def _answer_now(self, state: AMPState, ok: Callable[[float], bool]) -> Profile | None:
        passing = [p for p, ev in state.evaluated.values() if ok(ev.metric)]
        return min(passing, key=self.cost) if passing else None

    def propose(self, state: AMPState, ok: Callable[[float], bool]) -> Batch | None:
        """Search, then repair, then the uniform candidates cheaper than the answer."""
        if not self.pareto_list:
            self.build_pareto_list()
        if self._stage == "search":
            if probes := self._search_probes(state, ok):
                return Batch(probes)
            lo, _ = self.bounds(state, ok)
            self._stage, self._repair_from = "repair", max(lo + 1, 0)
        answer = self._answer_now(state, ok)
        if self._stage == "repair":
            if answer is not None and self.repair_rounds > 0:
                self.repair_rounds -= 1
                if probes := self._repair_probes(state, answer):
                    self.repairs.append({"from": answer.label(), "tried": sorted(probes)})
                    return Batch(probes, reference=answer)
            self._stage = "uniform"
        if self._stage == "uniform":
            self._stage = "done"
            state.seeds = [p for p, _ in state.evaluated.values()]  # what fast+optuna's Optuna starts from
            if probes := self._uniform_probes(state, ok, answer):
                return Batch(probes)
        return None

    def observe(self, results: dict[str, Evaluated], profiles: dict[str, Profile]) -> None:
        """Nothing beyond the shared state."""

    def report(self, state: AMPState, ok: Callable[[float], bool]) -> dict[str, Any]:
        lo, hi = self.bounds(state, ok)
        acc = self._answer_now(state, ok)
        return {"baseline": self.baseline.name, "ranking": "quantization noise per cost saved",
                "noise_seconds": self.noise_seconds, "full_evaluations": len(state.evaluated),
                "list_length": len(self.pareto_list), "cheapest_passing_index": lo, "first_failing_index": hi,
                "cost_tolerance": self.cost_tolerance, "stopped_within_tolerance": self.stopped_within_tolerance,
                "repairs": self.repairs, "uniform_skipped_as_failing": self.skipped_uniform,
                "pareto_list": [{"index": i, "cost": self.list_costs[i], "metric": state.evaluated[k][1].metric,
                                 "profile": self.pareto_list[i].label()}
                                for i, k in enumerate(self._keys) if k in state.evaluated],
                "accepted": acc.label() if acc else None}


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


class OptunaAMP:
    """Optuna search over per-group precisions with asynchronous ask/tell (see the module docstring)."""

    def __init__(self, ws: Workspace, candidates: list[Precision], cost: Callable[[Profile], float],
                 storage: str, name: str, objective: str, seed: int = 0, fresh: bool = False) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.ws = ws
        self.groups = [g.name for g in ws.graph.groups]
        self.cost = cost
        self.objective = objective
        self.dist = optuna.distributions.CategoricalDistribution(tuple(c.name for c in candidates))
        rdb = prepared_storage(storage, name, fresh)
        threshold = ws.fp32_metric - ws.exp.max_drop if ws.exp.higher_is_better else ws.fp32_metric + ws.exp.max_drop
        self.threshold = threshold
        if objective == "multi":
            sampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=max(8, min(50, 2 * len(self.groups))))
            self.study = optuna.create_study(study_name=name, storage=rdb, load_if_exists=True,
                                             directions=["maximize" if ws.exp.higher_is_better else "minimize",
                                                         "minimize"], sampler=sampler)
        elif objective == "constrained":
            sampler = optuna.samplers.TPESampler(seed=seed, constraints_func=lambda t: [t.user_attrs.get("violation", 0.0)],
                                                 multivariate=True, group=False)
            self.study = optuna.create_study(study_name=name, storage=rdb, load_if_exists=True,
                                             direction="minimize", sampler=sampler)
        else:
            raise ValueError(f"unknown objective {objective!r}: expected one of {', '.join(OBJECTIVES)}")
        from optuna.trial import TrialState

        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # interrupted earlier
            self.study.tell(t.number, state=TrialState.FAIL)
        self.running: dict[str, list[Any]] = {}

    def done_trials(self) -> int:
        from optuna.trial import TrialState

        return len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def seed_with(self, profiles: list[Profile]) -> None:
        if self.study.trials:
            return  # resumed: already seeded
        for p in profiles:
            self.study.enqueue_trial({g: p[g].name for g in self.groups})

    def ask(self) -> tuple[str, Profile]:
        trial = self.study.ask({g: self.dist for g in self.groups})
        profile = Profile.make({g: trial.params[g] for g in self.groups})
        self.running.setdefault(profile.key, []).append(trial)
        return f"optuna:{trial.number}", profile

    def tell(self, profile: Profile, metric: float) -> None:
        from optuna.trial import TrialState

        for trial in self.running.pop(profile.key, []):
            cost = self.cost(profile)
            if self.objective == "multi":
                self.study.tell(trial, [metric, cost])
            else:
                ok = metric >= self.threshold if self.ws.exp.higher_is_better else metric <= self.threshold
                violation = 0.0 if ok else abs(self.threshold - metric)
                trial.set_user_attr("violation", violation)
                self.study.tell(trial, cost, state=TrialState.COMPLETE)


class OptunaSearch:
    """Optuna AMP as a search of the AMP step: one Stream of ask/tell trials, seeded with the greedy
    Pareto list when greedy ran first (else the uniform candidates), within a trial and time budget."""

    def __init__(self, ws: Workspace, candidates: list[Precision], cost: Callable[[Profile], float], cost_name: str,
                 objective: str, trials: int, timeout: float | None, fresh: bool) -> None:
        self.ws, self.candidates, self.cost, self.cost_name = ws, candidates, cost, cost_name
        self.objective, self.trials, self.timeout, self.fresh = objective, trials, timeout, fresh
        self.search: OptunaAMP | None = None
        self.name = ""

    def propose(self, state: AMPState, ok: Callable[[float], bool]) -> Stream | None:
        if self.search is not None:
            return None
        from sweeper.search.evaluate import default_storage
        from sweeper.search.study import study_name

        ws = self.ws
        self.name = study_name(ws.exp.name, f"amp-optuna-{self.objective}-{self.cost_name}",
                               {"candidates": [c.name for c in self.candidates], **ws.fingerprint})
        search = self.search = OptunaAMP(ws, self.candidates, self.cost, default_storage(ws), self.name,
                                         self.objective, fresh=self.fresh)
        groups = [g.name for g in ws.graph.groups]
        search.seed_with(state.seeds or [Profile.uniform(groups, c) for c in self.candidates])
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        asked = search.done_trials()

        def next_profile() -> tuple[str, Profile] | None:
            nonlocal asked
            if asked >= self.trials or (deadline is not None and time.monotonic() > deadline):
                return None
            asked += 1
            return search.ask()

        return Stream(next_profile, total=self.trials)

    def observe(self, results: dict[str, Evaluated], profiles: dict[str, Profile]) -> None:
        assert self.search is not None
        for name, ev in results.items():
            self.search.tell(profiles[name], ev.metric)

    def report(self, state: AMPState, ok: Callable[[float], bool]) -> dict[str, Any] | None:
        from sweeper.search.evaluate import default_storage

        if self.search is None:
            return None
        return {"study": self.name, "storage": default_storage(self.ws), "objective": self.objective,
                "completed_trials": self.search.done_trials()}


def spearman(a: list[float], b: list[float]) -> float | None:
    if len(a) < 3:
        return None
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


# -- measured latency and the latency check (issue 13 item 5) ---------------------------------------------
# Measured latency is ms per sample (one run on the first evaluation batch, at most MEASURE_SAMPLES of it / its
# size), like the estimate.
# The front, the accepted profile and every passing uniform candidate are measured together, interleaved,
# in this process (ONNX Runtime CPU, 1 thread); with ``--cost latency`` the recommendation is never a
# profile that measures slower than a passing uniform candidate.

MEASURE_ROUNDS, MEASURE_MIN_ROUNDS, MEASURE_BUDGET_S = 15, 7, 15.0
MEASURE_SAMPLES = 32  # latency is measured per sample on (at most) this many samples of the first batch


@dataclass
class LatencyCheck:
    """The measurements and what the check decided."""

    accepted: tuple[Profile, Evaluated] | None  # after the check
    exports: dict[str, tuple[Path, Path]]  # name -> (onnx, encodings)
    measured: dict[str, LatencyStats]  # front<i>, uniform-<c>, accepted, search-choice
    doc: dict[str, Any]


def latency_fields(ev: Evaluated, stats: LatencyStats | None) -> dict[str, Any]:
    """Estimated and measured latency of one profile, both in ms per sample (the ``*_latency_ms`` keys are
    the same figures under their former names)."""
    med = None if stats is None else stats.median
    return {"est_ms_per_sample": ev.est_latency_ms, "measured_ms_per_sample": med,
            "measured_spread": None if stats is None else stats.spread_json(),
            "est_latency_ms": ev.est_latency_ms, "measured_latency_ms": med}


def measure_and_check(ws: Workspace, sweep: Sweep, state: AMPState, ok: Callable[[float], bool],
                      accepted: tuple[Profile, Evaluated] | None, front: list[tuple[float, float, Any]],
                      cost: str) -> LatencyCheck:
    """Export and measure the front, the accepted profile and the passing uniform candidates; with
    ``cost == "latency"``, when a passing uniform candidate measures faster than the search's choice, accept it
    instead (with another cost the finding is reported only: the user asked for the cheapest by that cost)."""
    replace = cost == "latency"
    named: dict[str, Profile] = {}
    if accepted is not None:
        named["accepted"] = accepted[0]
    named.update({f"front{i:02d}": item[0] for i, (_, _, item) in enumerate(front)})
    uniforms = {ev.name.replace(":", "-"): p for p, ev in state.evaluated.values()
                if ev.name.startswith("uniform:") and ok(ev.metric)}
    named.update(uniforms)
    exports = sweep.export_profiles(named)
    by_key = {p.key: exports[n][0] for n, p in named.items()}  # one measurement per distinct profile
    feeds = ws.sample_feeds(MEASURE_SAMPLES)
    stats = measure_interleaved(by_key, feeds, rounds=MEASURE_ROUNDS, min_rounds=MEASURE_MIN_ROUNDS,
                                budget_s=MEASURE_BUDGET_S)
    measured = {n: stats[p.key] for n, p in named.items()}
    doc: dict[str, Any] = {"applied": replace, "replaced": False}
    if accepted is None or not uniforms:
        return LatencyCheck(accepted, exports, measured, doc)
    fastest = min(uniforms, key=lambda n: measured[n].median)
    choice = measured["accepted"].median
    doc.update({"search_choice": accepted[0].label(), "search_choice_ms_per_sample": choice,
                "fastest_passing_uniform": fastest.replace("-", ":", 1),
                "fastest_passing_uniform_ms_per_sample": measured[fastest].median,
                "passing_uniform_ms_per_sample": {n.replace("-", ":", 1): measured[n].median for n in uniforms},
                "passing_uniform_spread": {n.replace("-", ":", 1): measured[n].spread_json() for n in uniforms}})
    slower = measured[fastest].median < choice and uniforms[fastest].key != accepted[0].key
    if slower and replace:
        accepted = state.evaluated[uniforms[fastest].key]
        exports.update(sweep.export_profiles({"accepted": accepted[0]}))
        measured["search-choice"], measured["accepted"] = measured["accepted"], measured[fastest]
        doc["replaced"] = True
        doc["note"] = (f"the search's choice measured {choice:.4g} ms/sample, slower than passing uniform "
                       f"{fastest.replace('-', ':', 1)} at {measured[fastest].median:.4g} ms/sample: accepted that")
    elif slower:
        doc["note"] = (f"the accepted profile (cheapest by cost {cost}) measures slower "
                       f"than passing uniform {fastest.replace('-', ':', 1)}; use --cost latency to prefer speed")
    return LatencyCheck(accepted, exports, measured, doc)


def latency_doc(ws: Workspace, lat: LatencyCheck | None) -> dict[str, Any]:
    """What the latency figures of results.json are: units, the estimate's target, how it was measured."""
    target = ws.cost_model.target
    return {"unit": "ms per sample", "estimate_target": target.name, "estimate_target_kind": target.kind,
            "estimate_batch": ws.cost_model.batch,
            "measured": None if lat is None else
            "ONNX Runtime CPU EP, 1 thread, default graph optimizations, the first evaluation batch "
            f"({min(ws.sample_size(), MEASURE_SAMPLES)} samples); median of interleaved "
            "rounds, spread = interquartile range and min/max",
            "check": None if lat is None else lat.doc}


@dataclass
class AMPReport:
    doc: dict[str, Any]
    output: Path


class AMPStep(Step):
    """Step 3 as a :class:`~sweeper.search.step.Step`: the algorithm's searches in order (see ``SEARCHES``)
    share one state of evaluated profiles; the answer is the cheapest passing profile evaluated."""

    name = "amp"
    export_each = False

    def __init__(self, ws: Workspace, candidates: list[Precision], *, algorithm: str = "greedy", cost: str = "bops",
                 objective: str = "multi", trials: int = 100, timeout: float | None = None, fresh: bool = False,
                 measure: bool = True, workers: int = 1, startup_seconds: float = 0.0) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {algorithm!r}: expected one of {', '.join(ALGORITHMS)}")
        algorithm = resolve_algorithm(algorithm, len(ws.graph.groups), len(candidates))
        self.ws, self.candidates, self.algorithm, self.cost_name = ws, candidates, algorithm, cost
        self.objective, self.trials, self.measure = objective, trials, measure
        self.strategy = algorithm
        self.cost = cost_function(ws, cost)
        self.state = AMPState()
        self.greedy = GreedyAMP(ws, candidates, self.cost, workers)
        make = {"greedy": lambda: self.greedy, "fast": lambda: FastAMP(ws, candidates, self.cost, workers, cost_name=cost),
                "uniform": lambda: UniformSearch(self.greedy.groups, candidates),
                "optuna": lambda: OptunaSearch(ws, candidates, self.cost, cost, objective, trials, timeout, fresh)}
        self.searches = {kind: make[kind]() for kind in SEARCHES[algorithm]}
        self._order = list(self.searches.values())
        self._current: Any = None
        self._t0: float | None = None
        self._startup0 = startup_seconds

    def ok(self, metric: float) -> bool:
        return self.ws.meets(metric)

    def params(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm, "cost": self.cost_name, "objective": self.objective,
                "trials": self.trials, "amp_candidates": ",".join(c.name for c in self.candidates)}

    def pool_needs(self) -> PoolNeeds:
        return PoolNeeds(tuple(c.name for c in self.candidates), reuse=True)

    def propose(self) -> Batch | Stream | None:
        if self._t0 is None:
            self._t0 = time.perf_counter()
        while self._order:
            proposal = self._order[0].propose(self.state, self.ok)
            if proposal is not None:
                self._current = self._order[0]
                return proposal
            self._order.pop(0)
        return None

    def observe(self, results: dict[str, Evaluated], profiles: dict[str, Profile]) -> None:
        for name, ev in results.items():
            self.state.add(ev, profiles[name])
        self._current.observe(results, profiles)

    def finish(self, ctx: StepContext) -> StepOutput:
        startup = getattr(ctx.pool, "startup_seconds", 0.0) - self._startup0
        search_seconds = time.perf_counter() - (self._t0 or time.perf_counter()) - startup
        return _amp_result(self, ctx, search_seconds, startup)


SEARCHES = {"greedy": ("greedy",), "fast": ("fast",), "optuna": ("uniform", "optuna"),
            "greedy+optuna": ("greedy", "optuna"), "fast+optuna": ("fast", "optuna")}


def _plot_doc(step: AMPStep, front: list[Any], accepted: tuple[Profile, Evaluated] | None,
              reports: dict[str, Any]) -> dict[str, Any]:
    ws, cost_of, st = step.ws, step.cost, step.state
    return {"experiment": ws.exp.name, "metric": ws.exp.metric, "fp32_metric": ws.fp32_metric,
            "max_drop": ws.exp.max_drop, "threshold": ws.target.threshold, "algorithm": step.algorithm,
            "cost": step.cost_name, "evaluations": len(st.evaluated),
            "all": [{"cost": cost_of(p), "metric": ev.metric} for p, ev in st.evaluated.values()],
            "greedy": reports.get("greedy"), "pareto_front": [{"cost": c, "metric": item[1].metric} for _, c, item in front],
            "accepted": None if accepted is None else {"cost": cost_of(accepted[0]), "metric": accepted[1].metric,
                                                       "profile": accepted[0].label()}}


def _amp_result(step: AMPStep, ctx: StepContext, search_seconds: float, startup: float) -> StepOutput:
    """The answer (the cheapest passing profile evaluated: greedy's pick, Optuna's, or a uniform one), its
    Pareto front, latency measurements, exports, the plot and the results document."""
    ws, cost_of, st, ok = step.ws, step.cost, step.state, step.ok
    higher = ws.exp.higher_is_better
    reports = {k: s.report(st, ok) for k, s in step.searches.items()}
    points = [(ev.metric if higher else -ev.metric, cost_of(p), (p, ev)) for p, ev in st.evaluated.values()]
    passing = [(c, m, item) for m, c, item in points if ok(item[1].metric)]
    accepted = min(passing, key=lambda t: (t[0], -t[1]))[2] if passing else None
    front = pareto_front(points)
    plot = render_in_background(ctx.pool, _plot_doc(step, front, accepted, reports), "amp_pareto")
    lat = measure_and_check(ws, ctx.sweep, st, ok, accepted, front, step.cost_name) if step.measure else None
    if lat is not None:
        accepted = lat.accepted
    exports = lat.exports if lat is not None else {}
    if accepted is not None and "accepted" not in exports:
        exports.update(ctx.sweep.export_profiles({"accepted": accepted[0]}))
    measured = lat.measured if lat is not None else {}
    front_doc = []
    for i, (_, c, (p, ev)) in enumerate(front):
        n = f"front{i:02d}"
        front_doc.append({"name": ev.name, "metric": ev.metric, "drop": ev.drop, "cost": c,
                          "bops_ratio": ev.bops_ratio, **latency_fields(ev, measured.get(n)), "profile": p.label(),
                          "onnx": ctx.final_path(exports[n][0].name) if n in exports else None})
    timed = [f for f in front_doc if f["measured_ms_per_sample"] is not None]
    corr = spearman([f["est_ms_per_sample"] for f in timed], [f["measured_ms_per_sample"] for f in timed])
    accepted_doc = None
    if accepted is not None:
        p, ev = accepted
        accepted_doc = {"name": ev.name, "metric": ev.metric, "drop": ev.drop, "cost": cost_of(p),
                        "bops_ratio": ev.bops_ratio, "size_mb": ev.size_mb,
                        **latency_fields(ev, measured.get("accepted")), "profile": p.label(),
                        "mixed": len(set(p.to_json().values())) > 1, "assignment": p.to_json(),
                        "onnx": ctx.final_path("accepted.onnx"), "encodings": ctx.final_path("accepted.encodings")}
    uniform_passing = sorted((cost_of(p), ev.name) for p, ev in st.evaluated.values()
                             if ev.name.startswith("uniform:") and ok(ev.metric))
    doc = {"experiment": ws.exp.name, "metric": ws.exp.metric, "fp32_metric": ws.fp32_metric,
           "max_drop": ws.exp.max_drop, "algorithm": step.algorithm, "cost": step.cost_name,
           "candidates": [c.name for c in step.candidates], "accepted": accepted_doc,
           "cheapest_passing_uniform": uniform_passing[0][1] if uniform_passing else None,
           "evaluations": len(st.evaluated), "search_seconds": search_seconds, "pool_startup_seconds": startup,
           "pareto_front": front_doc, "latency_rank_correlation": corr, "latency": latency_doc(ws, lat),
           "greedy": reports.get("greedy"), "fast": reports.get("fast"), "optuna": reports.get("optuna"),
           "faults": ctx.pool.faults() if hasattr(ctx.pool, "faults") else None,
           "all": [{"name": ev.name, "metric": ev.metric, "cost": cost_of(p), "profile": p.label()}
                   for p, ev in st.evaluated.values()]}
    (ctx.staging / "pareto.png").write_bytes(plot.result())
    metrics = {"fp32_metric": ws.fp32_metric, "evaluations": float(len(st.evaluated)), "search_seconds": search_seconds}
    if accepted_doc:
        metrics.update({"accepted_metric": accepted_doc["metric"], "accepted_cost": accepted_doc["cost"]})
        if accepted_doc["measured_ms_per_sample"] is not None:
            metrics["accepted_measured_ms_per_sample"] = accepted_doc["measured_ms_per_sample"]
    if corr is not None:
        metrics["latency_rank_correlation"] = corr
    return StepOutput(doc, metrics, ["pareto.png"], value=AMPReport(doc, ctx.final))


def run_amp(ws: Workspace, pool, tracker: Tracker | None, *, candidates: list[Precision],  # noqa: ANN001
            algorithm: str = "greedy", cost: str = "bops", objective: str = "multi", trials: int = 100,
            timeout: float | None = None, fresh: bool = False, measure: bool = True) -> AMPReport:
    """Step 3 on ``pool`` (see :class:`AMPStep`)."""
    step = AMPStep(ws, candidates, algorithm=algorithm, cost=cost, objective=objective, trials=trials,
                   timeout=timeout, fresh=fresh, measure=measure, workers=pool.size,
                   startup_seconds=getattr(pool, "startup_seconds", 0.0))
    return run_step(step, ws, pool, tracker, fresh).value
