"""AMP's measured latency: the front, the answer and the passing uniform candidates exported and timed
together (ONNX Runtime CPU, interleaved), the latency check that may replace the answer, and the rank
correlation of estimated and measured latency."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sweeper.cost.measure import LatencyStats, measure_interleaved
from sweeper.pipeline import Workspace
from sweeper.quant.profile import Profile
from sweeper.search.amp.common import AMPState
from sweeper.search.evaluate import Evaluated, Sweep

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
    uniforms = {f"uniform-{u.name}": p for p, ev in state.evaluated.values()
                if (u := p.uniform_precision) is not None and ok(ev.metric)}
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


def estimate_note(target_name: str, description: str, corr: float | None) -> str | None:
    """What a user must know when the estimated latency beside the front does not rank it the way this
    machine's measurement does: the estimate is for another target. None when they agree (or nothing was
    measured)."""
    if corr is None or corr >= 0.999:
        return None
    return (f"the estimated latency is for target {target_name!r} ({description or 'see sweeper/cost/targets'}), "
            f"not for the machine measured here: it ranks the front differently (rank correlation {corr:.2f}); "
            "the measured figures are this machine's (--cost latency decides by them)")


def latency_doc(ws: Workspace, lat: LatencyCheck | None, corr: float | None = None) -> dict[str, Any]:
    """What the latency figures of results.json are: units, the estimate's target, how it was measured, and
    whether the estimate ranks the front as the measurement does."""
    target = ws.cost_model.target
    return {"unit": "ms per sample", "estimate_target": target.name, "estimate_target_kind": target.kind,
            "estimate_note": estimate_note(target.name, target.description, corr),
            "estimate_batch": ws.cost_model.batch,
            "measured": None if lat is None else
            "ONNX Runtime CPU EP, 1 thread, default graph optimizations, the first evaluation batch "
            f"({min(ws.sample_size(), MEASURE_SAMPLES)} samples); median of interleaved "
            "rounds, spread = interquartile range and min/max",
            "check": None if lat is None else lat.doc}



def spearman(a: list[float], b: list[float]) -> float | None:
    if len(a) < 3:
        return None
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])
