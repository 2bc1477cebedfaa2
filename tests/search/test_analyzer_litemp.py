from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import fragile_mlp, write_experiment

from sweeper.config.experiment import load_experiment
from sweeper.pipeline import Workspace
from sweeper.quant.precision import Precision
from sweeper.search.analyzer import analysis_precisions, run_analyze
from sweeper.search.litemp import litemp_profiles, run_litemp


def _ws(tmp: Path) -> Workspace:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 16)).astype(np.float32)
    return Workspace(load_experiment(write_experiment(tmp, fragile_mlp(), {"x": x}, max_drop=0.002)))


def test_fragile_layer_is_ranked_first_by_every_ranking(tmp_path: Path) -> None:
    ws = _ws(tmp_path)
    base = Precision.parse("w4a8")
    pool = ws.pool(extra_precisions=analysis_precisions(base), probes=True)
    try:
        firsts = {}
        for ranking in ("enable_one", "disable_one", "sqnr"):
            rep = run_analyze(ws, pool, None, base, ranking)
            firsts[ranking] = rep.doc["groups"][0]
            assert [g["rank"] for g in rep.doc["groups"]] == list(range(1, len(rep.doc["groups"]) + 1))
    finally:
        pool.close()
    for ranking, g in firsts.items():
        assert g["ops"][0] == "fc2", (ranking, g["name"])
    assert firsts["enable_one"]["sqnr_db"] < 20
    doc = rep.doc
    assert doc["evaluations"] == 3 + 2 * len(ws.graph.groups)
    assert doc["summary"]["weights_only"] < doc["summary"]["activations_only"]  # the weights are what hurts
    out = ws.exp.output / "analyze"
    assert (out / "sensitivity.json").is_file() and (out / "report.html").is_file()
    assert "fc2" in (out / "report.html").read_text()
    ws.close()


def test_litemp_flips_the_fragile_layer_first(tmp_path: Path) -> None:
    ws = _ws(tmp_path)
    base, high = Precision.parse("w4a8"), Precision.parse("fp16")
    pool = ws.pool(extra_precisions=(*analysis_precisions(base), high.name), probes=True)
    try:
        rep = run_litemp(ws, pool, None, base, high, ks=(0, 20, 50, 100))
    finally:
        pool.close()
    assert rep.points[0].k == 0 and not rep.points[0].result.meets_target
    assert rep.chosen is not None and rep.chosen.k > 0
    assert rep.chosen.flipped[0] in {g.name for g in ws.graph.groups if "fc2" in g.ops}
    assert Path(rep.chosen.result.onnx or "").is_file()
    ws.close()


def test_litemp_profiles_dedupe_and_order() -> None:
    groups = ["a", "b", "c", "d"]
    plan = litemp_profiles(groups, ["c", "a", "d", "b"], Precision.parse("w8a8"), Precision.parse("fp16"),
                           (0, 5, 10, 20, 50, 100))
    assert [(k, flipped) for k, flipped, _ in plan] == [(0, []), (5, ["c"]), (50, ["c", "a"]), (100, ["c", "a", "d", "b"])]
    assert plan[1][2]["c"].is_fp16 and plan[1][2]["a"].name == "w8a8"


def test_noise_ranking_needs_three_evaluations_and_still_finds_the_fragile_layer(tmp_path: Path) -> None:
    """``--rank noise``: the summary's three evaluations, no per-group evaluation or probe; fc2 (whose 8-bit
    weights already lose the signal) first; the report and the text table cope with the missing metrics."""
    from sweeper.search.analyzer import format_analysis

    ws = _ws(tmp_path)
    base = Precision.parse("w8a8")
    pool = ws.pool(extra_precisions=analysis_precisions(base))
    try:
        doc = run_analyze(ws, pool, None, base, "noise").doc
    finally:
        pool.close()
    assert doc["evaluations"] == 3 and doc["probes"] == 0
    assert doc["groups"][0]["ops"][0] == "fc2" and doc["groups"][0]["enable_one"] is None
    nsr = [g["noise_nsr"] for g in doc["groups"]]
    assert nsr == sorted(nsr, reverse=True)
    assert "fc2" in format_analysis(doc)
    assert (ws.exp.output / "analyze" / "report.html").is_file()
    ws.close()
