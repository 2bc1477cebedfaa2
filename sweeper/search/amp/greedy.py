"""AMP's ``greedy`` search: AIMET's two-phase ``choose_mixed_precision`` (phase 1 every group at every
candidate, phase 2 a parallel k-ary search of the Pareto list phase 1 orders)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sweeper.pipeline import Workspace
from sweeper.quant.precision import Precision
from sweeper.quant.profile import Profile
from sweeper.search.amp.common import AMPState
from sweeper.search.evaluate import Evaluated
from sweeper.search.step import Batch


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
        return Batch({f"p2:{i}": self.pareto_list[i] for i in probes}, reference=self.base_profile,
                     early=True)  # phase 2 probes decide pass/fail only (phase 1's metrics rank: never stopped)

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
