"""AMP's ``fast`` search: the Pareto list ordered by estimated quantization noise per cost saved (no phase 1),
searched by full evaluations, then repair rounds and the cheaper uniform candidates."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from sweeper.pipeline import Workspace
from sweeper.quant.precision import Precision
from sweeper.quant.profile import Profile
from sweeper.search.amp.common import AMPState
from sweeper.search.evaluate import Evaluated
from sweeper.search.step import Batch


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
    """Whether ``p`` is at least as precise as ``q`` on both sides, so that a profile failing at ``p`` fails at
    ``q`` too. FP32 is at least anything. Float16 and an integer grid are not comparable either way: float16
    saturates at 65504 where a grid scales to the tensor's range (Magika's activations reach 5e5: fp16 fails
    where w8a16 keeps the FP32 metric), and a grid loses the small values float16's exponent keeps."""
    if p.is_fp32:
        return True
    if p.is_float != q.is_float:
        return False
    return p.weight_bits >= q.weight_bits and p.act_bits >= q.act_bits


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
    uniform candidates cheaper than the answer are evaluated last (never a costlier answer than they give), then,
    while none of the evaluated uniform candidates passes, the next cheapest (so the cheapest passing one is
    always known)."""

    def __init__(self, ws: Workspace, candidates: list[Precision], cost: Callable[[Profile], float],
                 workers: int, repair_rounds: int = 0, cost_tolerance: float = 0.02, cost_name: str = "",
                 rebuilds: int = 3) -> None:
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
        self.rebuild_limit = rebuilds
        self.rebuilds: list[dict[str, Any]] = []  # lists searched again without the move that broke the last one
        self._frozen: set[str] = set()  # groups whose next move broke the target: they stay where they are
        self.skipped_uniform: list[str] = []  # uniform candidates a failing profile showed to fail
        self._stage = "search"
        self._repair_from = 0  # index into self.moves the next repair round starts at
        self._answer: Profile | None = None
        self._noise: dict[tuple[str, str], float] | None = None
        self.rebased: dict[str, Any] | None = None  # the list built again from a passing uniform candidate

    def build_pareto_list(self) -> list[Profile]:
        """The noise estimate (one FP32 run, once) and the Pareto list it orders from ``self.baseline``."""
        from sweeper.search.analyzer import quantization_noise

        if self._noise is None:
            t0 = time.perf_counter()
            self._noise = quantization_noise(self.ws, self.candidates)
            self.noise_seconds = time.perf_counter() - t0
        noise = self._noise
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

    def _breaking_move_probes(self, state: AMPState, ok: Callable[[float], bool]) -> dict[str, Profile]:
        """When the search stopped with unknown entries between the cheapest passing entry and the first failing
        one, those entries (nearest first, one per worker): which move broke the target must be known to
        search again without it."""
        lo, hi = self.bounds(state, ok)
        if len(self.rebuilds) >= self.rebuild_limit or lo < 0 or hi >= len(self.pareto_list) or hi == lo + 1:
            return {}
        unknown = [i for i in range(lo + 1, hi) if self._keys[i] not in state.evaluated][: self.workers]
        return {f"fast:{i}": self.pareto_list[i] for i in unknown}

    def _rebuild(self, state: AMPState, ok: Callable[[float], bool]) -> bool:
        """Search again from the cheapest passing entry with the rest of the list, without the move that broke
        the target (entry ``lo + 1``) and any later move of that group: one move the noise estimate misjudged
        (a sensitive group ranked as harmless) no longer cuts off every cheaper entry behind it."""
        lo, hi = self.bounds(state, ok)
        if len(self.rebuilds) >= self.rebuild_limit or lo < 0 or hi != lo + 1 or hi >= len(self.pareto_list):
            return False
        bad = self.moves[lo][0]
        self._frozen.add(bad)
        base = self.pareto_list[lo]
        plist, costs, moves = [base], [self.list_costs[lo]], []
        for g, c, slope in self.moves[lo + 1:]:
            if g in self._frozen:
                continue
            nxt = plist[-1].with_groups({g: c})
            cost = self.cost(nxt)
            if cost < costs[-1] - 1e-12 * max(1.0, abs(costs[0])):
                plist.append(nxt)
                costs.append(cost)
                moves.append((g, c, slope))
        if len(plist) < 2:
            return False
        self.rebuilds.append({"from": base.label(), "from_cost": costs[0], "frozen_group": bad,
                              "list_length": len(plist)})
        self.pareto_list, self.list_costs, self.moves = plist, costs, moves
        self._keys = [p.key for p in plist]
        self.stopped_within_tolerance = False
        return True

    def _rebase(self, state: AMPState, ok: Callable[[float], bool]) -> bool:
        """When no entry of the list passes, its baseline included, but a cheaper uniform candidate does (a
        float16 baseline that saturates where an integer grid does not): build the list again from the cheapest
        passing uniform candidate and search it, once. Without this the answer would be that uniform profile
        even where lowering some of its groups keeps the target."""
        if self.rebased is not None or self.bounds(state, ok)[0] >= 0:
            return False
        passing = [p for p, ev in state.evaluated.values() if p.uniform_precision is not None and ok(ev.metric)]
        if not passing:
            return False
        best = min(passing, key=self.cost)
        prec = best.uniform_precision
        assert prec is not None
        if prec == self.baseline or not any(self.cost(Profile.uniform(self.groups, c)) < self.cost(best)
                                            for c in self.candidates):
            return False
        self.rebased = {"from": self.baseline.name, "to": prec.name,
                        "why": f"no entry of the list from {self.baseline.name} passed, uniform {prec.name} did"}
        self.baseline, self.base_profile = prec, best
        self._frozen, self._repair_from = set(), 0
        self.stopped_within_tolerance = False
        self.build_pareto_list()
        return True

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

    def _passing_uniform_probes(self, state: AMPState, ok: Callable[[float], bool]) -> dict[str, Profile]:
        """When no evaluated uniform candidate passes yet: the cheapest ones not evaluated and not shown to fail
        (one per worker), so that the cheapest passing uniform candidate is always known and reported (the
        costliest, the list's entry 0, is not assumed to pass; usually one evaluation)."""
        if any(p.uniform_precision is not None and ok(ev.metric) for p, ev in state.evaluated.values()):
            return {}
        failing = [p for p, ev in state.evaluated.values() if not ok(ev.metric)]
        out: dict[str, Profile] = {}
        for c in sorted(self.candidates, key=lambda c: self.cost(Profile.uniform(self.groups, c))):
            p = Profile.uniform(self.groups, c)
            if state.metric(p) is not None or any(all(at_least(f[g], c) for g in self.groups) for f in failing):
                continue
            out[f"uniform:{c.name}"] = p
            if len(out) == self.workers:
                break
        return out

    def _answer_now(self, state: AMPState, ok: Callable[[float], bool]) -> Profile | None:
        passing = [p for p, ev in state.evaluated.values() if ok(ev.metric)]
        return min(passing, key=self.cost) if passing else None

    def propose(self, state: AMPState, ok: Callable[[float], bool]) -> Batch | None:
        """Search, then repair, then the uniform candidates cheaper than the answer."""
        if not self.pareto_list:
            self.build_pareto_list()
        if self._stage == "search":
            while True:
                if probes := self._search_probes(state, ok) or self._breaking_move_probes(state, ok):
                    return Batch(probes, early=True)
                if not self._rebuild(state, ok):
                    break
            lo, _ = self.bounds(state, ok)
            self._stage, self._repair_from = "repair", max(lo + 1, 0)
        answer = self._answer_now(state, ok)
        if self._stage == "repair":
            if answer is not None and self.repair_rounds > 0:
                self.repair_rounds -= 1
                if probes := self._repair_probes(state, answer):
                    self.repairs.append({"from": answer.label(), "tried": sorted(probes)})
                    return Batch(probes, reference=answer, early=True)
            self._stage = "uniform"
        if self._stage == "uniform":
            self._stage = "known_uniform"
            if probes := self._uniform_probes(state, ok, answer):
                return Batch(probes, early=True)
        if self._stage == "known_uniform":
            if probes := self._passing_uniform_probes(state, ok):
                return Batch(probes, early=True)
            if self._rebase(state, ok):
                self._stage = "search"
                return self.propose(state, ok)
            self._stage = "done"
            state.seeds = [p for p, _ in state.evaluated.values()]  # what fast+optuna's Optuna starts from
        return None

    def observe(self, results: dict[str, Evaluated], profiles: dict[str, Profile]) -> None:
        """Nothing beyond the shared state."""

    def report(self, state: AMPState, ok: Callable[[float], bool]) -> dict[str, Any]:
        lo, hi = self.bounds(state, ok)
        acc = self._answer_now(state, ok)
        return {"baseline": self.baseline.name, "rebased": self.rebased, "ranking": "quantization noise per cost saved",
                "noise_seconds": self.noise_seconds, "full_evaluations": len(state.evaluated),
                "list_length": len(self.pareto_list), "cheapest_passing_index": lo, "first_failing_index": hi,
                "cost_tolerance": self.cost_tolerance, "stopped_within_tolerance": self.stopped_within_tolerance,
                "repairs": self.repairs, "rebuilds": self.rebuilds, "uniform_skipped_as_failing": self.skipped_uniform,
                "pareto_list": [{"index": i, "cost": self.list_costs[i], "metric": state.evaluated[k][1].metric,
                                 "profile": self.pareto_list[i].label()}
                                for i, k in enumerate(self._keys) if k in state.evaluated],
                "accepted": acc.label() if acc else None}
