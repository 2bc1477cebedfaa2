"""Step 2b: LiteMP. Keep the base precision and flip the top-k % most sensitive quantizer groups to a
higher precision; sweep k upward until the target is met (parallel batches of k on the pool, up to 100 %),
then refine between the last failing and the first passing k."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper.pipeline import Workspace
from sweeper.quant.precision import Precision
from sweeper.quant.profile import Profile
from sweeper.search.analyzer import analysis_precisions, rank_groups, run_analyze
from sweeper.search.evaluate import Evaluated
from sweeper.search.step import Batch, PoolNeeds, Step, StepContext, StepOutput, run_step
from sweeper.tracking.tracker import Tracker

DEFAULT_KS = (0, 5, 10, 15, 20, 30, 50, 75, 100)


@dataclass
class LiteMPPoint:
    k: float
    flipped: list[str]
    result: Evaluated


@dataclass
class LiteMPReport:
    points: list[LiteMPPoint]
    chosen: LiteMPPoint | None
    ranking: str
    output: Path


def load_ranking(ws: Workspace, base: Precision, ranking: str) -> list[str] | None:
    """Groups ranked by an earlier ``analyze`` at the same base, or None when there is none."""
    path = ws.exp.output / "analyze" / "sensitivity.json"
    if not path.exists():
        return None
    doc = json.loads(path.read_text())
    names = {g.name for g in ws.graph.groups}
    if doc.get("base") != base.name or {g["name"] for g in doc["groups"]} != names:
        return None
    if ranking == "sqnr" and any(g.get("sqnr_db") is None for g in doc["groups"]):
        return None
    return [g["name"] for g in rank_groups(doc["groups"], ranking, ws.exp.higher_is_better)]


def litemp_profiles(groups: list[str], ranked: list[str], base: Precision, high: Precision,
                    ks: tuple[float, ...]) -> list[tuple[float, list[str], Profile]]:
    """(k, flipped groups, profile) for each k, dropping ks that flip the same groups as a smaller k."""
    seen: set[int] = set()
    out = []
    for k in sorted(ks):
        n = min(len(ranked), math.ceil(len(ranked) * k / 100.0))
        if n in seen:
            continue
        seen.add(n)
        flipped = ranked[:n]
        out.append((k, flipped, Profile.uniform(groups, base).with_groups({g: high for g in flipped})))
    return out


class LiteMPStep(Step):
    """Step 2b as a :class:`~sweeper.search.step.Step`. Batches of k (one per worker) in increasing order
    until one meets the target, up to 100 % of the groups; then, where the metric jumped between the last
    failing and the first passing k, a bisection over the number of flipped groups finds the smallest
    passing share (the workflow's "more and more until the target is met")."""

    name = "litemp"

    def __init__(self, ws: Workspace, ranked: list[str], base: Precision, high: Precision,
                 ks: tuple[float, ...] = DEFAULT_KS, ranking: str = "enable_one", workers: int = 1) -> None:
        self.ws, self.ranked, self.base, self.high, self.ks, self.ranking = ws, ranked, base, high, ks, ranking
        self.groups = [g.name for g in ws.graph.groups]
        self.base_profile = Profile.uniform(self.groups, base)
        self.plan = litemp_profiles(self.groups, ranked, base, high, ks)
        self.workers = max(1, workers)
        self.points: list[LiteMPPoint] = []
        self._pending: dict[str, tuple[float, list[str]]] = {}

    def params(self) -> dict[str, Any]:
        return {"base": self.base.name, "high": self.high.name, "ks": ",".join(map(str, self.ks)),
                "ranking": self.ranking}

    def pool_needs(self) -> PoolNeeds:
        return litemp_needs(self.base, self.high)

    def _flip(self, n: int) -> tuple[float, list[str], Profile]:
        flipped = self.ranked[:n]
        k = 100.0 * n / max(len(self.ranked), 1)
        return k, flipped, self.base_profile.with_groups({g: self.high for g in flipped})

    def _batch(self, items: list[tuple[float, list[str], Profile]]) -> Batch:
        self._pending = {f"k{k:g}": (k, flipped) for k, flipped, _ in items}
        return Batch({f"k{k:g}": p for k, _, p in items}, reference=self.base_profile, early=True)  # pass/fail

    def propose(self) -> Batch | None:
        passing = [pt for pt in self.points if pt.result.meets_target]
        if not passing:
            if not self.plan:
                return None
            batch, self.plan = self.plan[:self.workers], self.plan[self.workers:]
            return self._batch(batch)
        best = min(passing, key=lambda pt: len(pt.flipped))
        fails = [len(pt.flipped) for pt in self.points if not pt.result.meets_target
                 and len(pt.flipped) < len(best.flipped)]
        lo, hi = (max(fails) if fails else -1), len(best.flipped)
        if hi - lo <= 1:
            return None
        todo = sorted({lo + round((j + 1) * (hi - lo) / (self.workers + 1)) for j in range(self.workers)} - {lo, hi})
        return self._batch([self._flip(n) for n in todo])

    def observe(self, results: dict[str, Evaluated], profiles: dict[str, Profile]) -> None:
        for name, ev in results.items():
            k, flipped = self._pending[name]
            self.points.append(LiteMPPoint(k, flipped, ev))
        self.points.sort(key=lambda pt: len(pt.flipped))

    def finish(self, ctx: StepContext) -> StepOutput:
        ws = self.ws
        passing = [pt for pt in self.points if pt.result.meets_target]
        chosen = min(passing, key=lambda pt: len(pt.flipped)) if passing else None
        note = None if chosen else (f"no share of groups at {self.high.name} meets the target, up to "
                                    f"{max((pt.k for pt in self.points), default=0):g} %")
        doc: dict[str, Any] = {
            "experiment": ws.exp.name, "metric": ws.exp.metric, "fp32_metric": ws.fp32_metric,
            "max_drop": ws.exp.max_drop, "base": self.base.name, "high": self.high.name, "ranking": self.ranking,
            "chosen": None if chosen is None else {"k": chosen.k, "flipped": chosen.flipped, **chosen.result.to_json()},
            "note": note,
            "points": [{"k": pt.k, "flipped": pt.flipped, **pt.result.to_json()} for pt in self.points],
        }
        value = LiteMPReport(self.points, chosen, self.ranking, ctx.final)
        return StepOutput(doc, {"fp32_metric": ws.fp32_metric, "chosen_k": chosen.k if chosen else -1.0}, value=value)


def litemp_needs(base: Precision, high: Precision) -> PoolNeeds:
    """What LiteMP's workers need: the analysis of ``base`` (which it runs first when there is no ranking) and
    the ``high`` precision of the flipped groups."""
    return PoolNeeds((*analysis_precisions(base), high.name), probes=True, reuse=True)


def run_litemp(ws: Workspace, pool, tracker: Tracker | None, base: Precision, high: Precision,  # noqa: ANN001
               ks: tuple[float, ...] = DEFAULT_KS, ranking: str = "enable_one", fresh: bool = False) -> LiteMPReport:
    """Step 2b on ``pool``; runs the sensitivity analysis first when there is no ranking for ``base``."""
    ranked = load_ranking(ws, base, ranking)
    if ranked is None:
        rep = run_analyze(ws, pool, tracker, base, ranking, fresh=fresh)
        ranked = [g["name"] for g in rep.doc["groups"]]
    step = LiteMPStep(ws, ranked, base, high, ks, ranking, workers=pool.size)
    return run_step(step, ws, pool, tracker, fresh).value


def format_litemp(rep: LiteMPReport, metric: str) -> str:
    head = f"{'k %':>5} {'flipped':>7} {metric:>10} {'drop':>9} {'BOPs':>7} {'est ms':>9}  target"
    lines = [head, "-" * len(head)]
    for pt in rep.points:
        r = pt.result
        mark = "ok" if r.meets_target else "-"
        if r.stopped_early:  # its metric is over the samples it ran
            mark += f"   (stopped after {r.samples_evaluated} samples: cannot meet the target)"
        if rep.chosen is pt:
            mark += "  <= chosen (smallest k meeting the target)"
        lines.append(f"{pt.k:>5g} {len(pt.flipped):>7} {r.metric:>10.4f} {r.drop:>9.4f} {r.bops_ratio:>6.2f}x "
                     f"{r.est_latency_ms:>9.4f}  {mark}")
    return "\n".join(lines)
