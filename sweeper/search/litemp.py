"""Step 2b: LiteMP. Keep the base precision and flip the top-k % most sensitive quantizer groups to a
higher precision; sweep k upward until the target is met (parallel batches of k on the pool)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper.pipeline import StagedOutput, Workspace
from sweeper.quant.precision import Precision
from sweeper.quant.profile import Profile
from sweeper.search.analyzer import rank_groups, run_analyze
from sweeper.search.evaluate import Evaluated, Sweep, write_json
from sweeper.tracking.tracker import Tracker

DEFAULT_KS = (0, 5, 10, 15, 20, 30, 50)


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


def run_litemp(ws: Workspace, pool, tracker: Tracker | None, base: Precision, high: Precision,  # noqa: ANN001
               ks: tuple[float, ...] = DEFAULT_KS, ranking: str = "enable_one", fresh: bool = False) -> LiteMPReport:
    ranked = load_ranking(ws, base, ranking)
    if ranked is None:
        rep = run_analyze(ws, pool, tracker, base, ranking, fresh=fresh)
        ranked = [g["name"] for g in rep.doc["groups"]]
    groups = [g.name for g in ws.graph.groups]
    plan = litemp_profiles(groups, ranked, base, high, ks)
    out = StagedOutput(ws.exp.output, "litemp")
    points: list[LiteMPPoint] = []
    try:
        sweep = Sweep(ws, "litemp", "litemp", out.path, tracker, fresh=fresh,
                      params={"base": base.name, "high": high.name, "ks": ",".join(map(str, ks)), "ranking": ranking})
        chosen = None
        for start in range(0, len(plan), max(pool.size, 1)):  # in order of k, a batch of workers at a time
            batch = plan[start:start + max(pool.size, 1)]
            named = {f"k{k:g}": p for k, _, p in batch}
            results = sweep.evaluate(pool, named, reference=Profile.uniform(groups, base))
            for k, flipped, _ in batch:
                points.append(LiteMPPoint(k, flipped, results[f"k{k:g}"]))
            passing = [pt for pt in points if pt.result.meets_target]
            if passing:
                chosen = min(passing, key=lambda pt: pt.k)
                break
        doc: dict[str, Any] = {
            "experiment": ws.exp.name, "metric": ws.exp.metric, "fp32_metric": ws.fp32_metric,
            "max_drop": ws.exp.max_drop, "base": base.name, "high": high.name, "ranking": ranking,
            "chosen": None if chosen is None else {"k": chosen.k, "flipped": chosen.flipped, **chosen.result.to_json()},
            "points": [{"k": pt.k, "flipped": pt.flipped, **pt.result.to_json()} for pt in points],
        }
        for entry in [doc["chosen"], *doc["points"]]:  # paths as they will be once the folder is in place
            if entry and entry.get("onnx"):
                entry["onnx"] = str(out.final / Path(entry["onnx"]).name)
                entry["encodings"] = str(out.final / Path(entry["encodings"]).name)
        write_json(out.path / "results.json", doc)
        sweep.flush()  # exports and records land in the staging folder before it moves
        final = out.commit()
        sweep.finish({"fp32_metric": ws.fp32_metric, "chosen_k": chosen.k if chosen else -1.0},
                     [final / "results.json"])
    except BaseException:
        out.abort()
        raise
    for pt in points:
        if pt.result.onnx:
            pt.result.onnx = str(final / Path(pt.result.onnx).name)
            pt.result.encodings = str(final / Path(pt.result.encodings or "").name)
    return LiteMPReport(points, chosen, ranking, final)


def format_litemp(rep: LiteMPReport, metric: str) -> str:
    head = f"{'k %':>5} {'flipped':>7} {metric:>10} {'drop':>9} {'BOPs':>7} {'est ms':>9}  target"
    lines = [head, "-" * len(head)]
    for pt in rep.points:
        r = pt.result
        mark = "ok" if r.meets_target else "-"
        if rep.chosen is pt:
            mark += "  <= chosen (smallest k meeting the target)"
        lines.append(f"{pt.k:>5g} {len(pt.flipped):>7} {r.metric:>10.4f} {r.drop:>9.4f} {r.bops_ratio:>6.2f}x "
                     f"{r.est_latency_ms:>9.4f}  {mark}")
    return "\n".join(lines)
