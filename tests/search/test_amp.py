from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import fragile_mlp, write_experiment

from sweeper.config.experiment import load_experiment
from sweeper.cost.bops import profile_cost
from sweeper.pipeline import Workspace
from sweeper.quant.precision import Precision
from sweeper.quant.profile import Profile
from sweeper.search.amp import pareto_front, run_amp, spearman


def _ws(tmp: Path, max_drop: float = 0.002) -> Workspace:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 16)).astype(np.float32)
    return Workspace(load_experiment(write_experiment(tmp, fragile_mlp(), {"x": x}, max_drop=max_drop,
                                                      candidates="[w4a8, w8a8, fp16]")))


def test_pareto_front_keeps_non_dominated_points() -> None:
    pts = [(0.9, 1.0, "a"), (0.95, 2.0, "b"), (0.93, 2.5, "c"), (0.8, 0.5, "d"), (0.95, 3.0, "e")]
    assert [p[2] for p in pareto_front(pts)] == ["d", "a", "b"]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0 and spearman([1, 2], [2, 1]) is None


def test_greedy_amp_finds_a_mix_no_costlier_than_the_best_uniform(tmp_path: Path) -> None:
    ws = _ws(tmp_path)
    pool = ws.pool()
    try:
        rep = run_amp(ws, pool, None, candidates=list(ws.exp.candidates), algorithm="greedy", measure=False)
    finally:
        pool.close()
    d = rep.doc
    acc = d["accepted"]
    assert acc is not None and acc["drop"] <= ws.exp.max_drop
    # the fragile fc2 breaks at w4a8 and at w8a8, so only uniform fp16 passes; keeping fc2 (and what feeds
    # it) in fp16 while the rest goes lower passes and is cheaper
    groups = [g.name for g in ws.graph.groups]
    uniform_fp16 = profile_cost(ws.graph, Profile.uniform(groups, Precision.parse("fp16"))).bops_ratio
    assert d["cheapest_passing_uniform"] == "uniform:fp16"
    assert acc["mixed"] and acc["cost"] < uniform_fp16
    fc2 = next(g.name for g in ws.graph.groups if "fc2" in g.ops)
    assert acc["assignment"][fc2] == "fp16"
    g = d["greedy"]
    assert g["baseline"] == "fp16" and g["phase1_evaluations"] == 3 + 2 * len(groups)
    costs = [e["cost"] for e in g["pareto_list"]]
    assert costs == sorted(costs, reverse=True)  # lowering groups only ever reduces cost
    assert (rep.output / "accepted.onnx").is_file() and (rep.output / "pareto.png").is_file()
    ws.close()


def test_optuna_amp_is_resumable_and_seeded(tmp_path: Path) -> None:
    import optuna

    ws = _ws(tmp_path)
    pool = ws.pool()
    try:
        first = run_amp(ws, pool, None, candidates=list(ws.exp.candidates), algorithm="greedy+optuna", trials=12,
                        measure=False)
        again = run_amp(ws, pool, None, candidates=list(ws.exp.candidates), algorithm="greedy+optuna", trials=20,
                        measure=False)
    finally:
        pool.close()
    info = first.doc["optuna"]
    study = optuna.load_study(study_name=info["study"], storage=info["storage"])
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert first.doc["optuna"]["completed_trials"] == 12
    assert again.doc["optuna"]["completed_trials"] == 20 == len(complete)  # continued, not restarted
    seeded = {tuple(sorted(t.params.items())) for t in complete[: len(first.doc["greedy"]["pareto_list"])]}
    assert len(seeded) >= 2
    assert again.doc["accepted"]["cost"] <= first.doc["accepted"]["cost"] + 1e-9
    ws.close()


def test_prefix_reuse_changes_no_metric_and_does_the_work(tmp_path: Path) -> None:
    """The same greedy AMP on a pool whose workers run profiles from the baseline's stored activations and on
    one that runs every profile in full: every evaluated profile gets the same metric, bit for bit."""
    docs, stats = [], []
    for reuse in (False, True):
        (tmp_path / f"reuse{reuse}").mkdir()
        ws = _ws(tmp_path / f"reuse{reuse}")
        pool = ws.pool(reuse=reuse)
        try:
            docs.append(run_amp(ws, pool, None, candidates=list(ws.exp.candidates), algorithm="greedy",
                                measure=True).doc)
            worker = pool.started().worker
            stats.append(None if worker.reuse is None else dict(worker.reuse.stats))
        finally:
            pool.close()
            ws.close()
    plain, reused = ({e["name"]: e["metric"] for e in d["all"]} for d in docs)
    assert plain == reused and len(plain) == docs[0]["evaluations"] >= 8
    assert stats[0] is None and stats[1]["suffix_batches"] > 0
    assert docs[1]["accepted"]["measured_latency_ms"] > 0  # measured by the worker
