from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import fragile_mlp, write_experiment

from sweeper.config.experiment import load_experiment
from sweeper.cost.bops import profile_cost
from sweeper.pipeline import Workspace
from sweeper.quant.precision import Precision
from sweeper.quant.profile import Profile
from sweeper.search.amp.common import pareto_front
from sweeper.search.amp.latency import spearman
from sweeper.search.amp.step import run_amp


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


def test_noise_ordered_moves_walk_each_group_down_its_convex_hull() -> None:
    from sweeper.search.amp.fast import noise_ordered_moves

    cands = [Precision.parse(c) for c in ("fp16", "w8a16", "w8a8", "w4a8")]
    fp16 = cands[0]
    # group a: w8a16 is dominated (more noise per cost saved than going straight to w8a8); group b: cheap noise
    noise = {("a", "fp16"): 0.0, ("a", "w8a16"): 5.0, ("a", "w8a8"): 6.0, ("a", "w4a8"): 100.0,
             ("b", "fp16"): 0.0, ("b", "w8a16"): 0.1, ("b", "w8a8"): 0.3, ("b", "w4a8"): 1.0}
    saved = {(g, c): s for g in "ab" for c, s in (("fp16", 0.0), ("w8a16", 2.0), ("w8a8", 3.0), ("w4a8", 3.5))}
    moves = noise_ordered_moves(["a", "b"], cands, fp16, noise, saved)
    # b: 0.1/2, then 0.2/1, then 0.7/0.5; a skips w8a16 (6/3 < 5/2), then 94/0.5
    assert [(g, c.name) for g, c, _ in moves] == [("b", "w8a16"), ("b", "w8a8"), ("b", "w4a8"), ("a", "w8a8"),
                                                   ("a", "w4a8")]
    slopes = [s for _, _, s in moves]
    assert slopes == sorted(slopes)


def test_quantization_noise_ranks_the_fragile_layer_first(tmp_path: Path) -> None:
    """fc2's 4-bit weights lose the signal (one huge weight per row sets the scale): the estimate must say so
    without simulating anything, and more bits must mean less noise."""
    from sweeper.search.analyzer import quantization_noise

    ws = _ws(tmp_path)
    noise = quantization_noise(ws, list(ws.exp.candidates))
    fc2 = next(g.name for g in ws.graph.groups if "fc2" in g.ops)
    others = [g.name for g in ws.graph.groups if g.name != fc2]
    # the plain weight NSR would hide it (the huge weights dominate the weight power but meet zero inputs)
    assert all(noise[(fc2, "w8a8")] > 100 * noise[(g, "w8a8")] for g in others)
    assert noise[(fc2, "w4a8")] > 0.5
    for g in ws.graph.groups:
        assert noise[(g.name, "fp16")] <= noise[(g.name, "w8a8")] <= noise[(g.name, "w4a8")] + 1e-12
    ws.close()


def test_fast_amp_finds_the_mix_in_few_evaluations(tmp_path: Path) -> None:
    ws = _ws(tmp_path)
    pool = ws.pool()
    try:
        d = run_amp(ws, pool, None, candidates=list(ws.exp.candidates), algorithm="fast", measure=False).doc
    finally:
        pool.close()
    acc, f = d["accepted"], d["fast"]
    assert acc is not None and acc["drop"] <= ws.exp.max_drop and acc["mixed"]
    fc2 = next(g.name for g in ws.graph.groups if "fc2" in g.ops)
    assert acc["assignment"][fc2] == "fp16"
    groups = [g.name for g in ws.graph.groups]
    uniform_fp16 = profile_cost(ws.graph, Profile.uniform(groups, Precision.parse("fp16"))).bops_ratio
    assert acc["cost"] < uniform_fp16
    assert f["full_evaluations"] == d["evaluations"] < 3 + 2 * len(groups)  # fewer than greedy's phase 1
    # only uniform fp16 passes: it is always evaluated (as the list's entry 0, fast:0, or in the last stage) and
    # reported, whatever name it was evaluated under
    assert {e["profile"]: e["name"] for e in d["all"]}.get("fp16") in ("fast:0", "uniform:fp16")
    assert d["cheapest_passing_uniform"] == "uniform:fp16"

    # every list entry evaluated on the way agrees with the target where the search says it does
    lo, hi = f["cheapest_passing_index"], f["first_failing_index"]
    by_index = {e["index"]: e["metric"] for e in f["pareto_list"]}
    assert ws.meets(by_index[lo]) and (hi not in by_index or not ws.meets(by_index[hi]))
    ws.close()


def test_auto_is_the_exhaustive_greedy_on_small_models_and_fast_on_large_ones() -> None:
    from sweeper.search.amp.common import AUTO_EXHAUSTIVE_MAX, resolve_algorithm

    assert resolve_algorithm("auto", 5, 6) == "greedy"  # the MNIST example: 31 evaluations
    assert resolve_algorithm("auto", 128, 6) == "fast"  # the real classifier: 646
    assert resolve_algorithm("auto", AUTO_EXHAUSTIVE_MAX, 2) == "fast"
    assert resolve_algorithm("greedy", 383, 6) == "greedy" and resolve_algorithm("fast", 2, 2) == "fast"


def test_prefix_reuse_only_where_greedy_phase_1_runs() -> None:
    """AMP's workers get prefix reuse (memory and start-up) only when greedy's phase 1 changes one group of
    the baseline at a time; the fast search's probes would never run from a stored prefix."""
    from sweeper.api import amp_needs
    from sweeper.quant.precision import Precision

    cands = [Precision.parse(p) for p in ("w8a8", "w4a8", "fp16")]
    assert amp_needs(cands, "greedy", 300).reuse and amp_needs(cands, "greedy+optuna", 300).reuse
    assert not amp_needs(cands, "fast", 5).reuse and not amp_needs(cands, "fast+optuna", 5).reuse
    assert amp_needs(cands, "auto", 5).reuse  # auto: greedy on a few groups
    assert not amp_needs(cands, "auto", 300).reuse  # and fast on hundreds
    assert amp_needs(cands, "fast", 5).extra_precisions == ("w8a8", "w4a8", "fp16")


def test_a_uniform_profile_is_known_by_its_content() -> None:
    assert Profile.uniform(["a", "b"], "w8a16").uniform_precision == Precision.parse("w8a16")
    assert Profile.make({"a": "w8a16", "b": "fp16"}).uniform_precision is None


def test_an_estimate_that_misranks_the_measured_front_says_it_is_for_another_target() -> None:
    from sweeper.report.amp import format_amp
    from sweeper.search.amp.latency import estimate_note

    assert estimate_note("npu_generic", "an NPU", 1.0) is None and estimate_note("npu_generic", "", None) is None
    note = estimate_note("npu_generic", "an NPU", -1.0)
    assert note is not None and "'npu_generic'" in note and "rank correlation -1.00" in note
    doc = {"algorithm": "fast", "cost": "bops", "experiment": "x", "candidates": ["w8a8", "fp16"], "fp32_metric": 1.0,
           "max_drop": 0.01, "evaluations": 3, "search_seconds": 1.0, "pareto_front": [], "accepted": None,
           "latency_rank_correlation": -1.0, "latency": {"estimate_note": note}}
    assert f"note: {note}" in format_amp(doc, "top1", Path("out"))


def test_fast_searches_again_without_the_move_that_broke_the_target() -> None:
    """The list lowers a, then b (a group the noise estimate misjudged), then c. Entry 2 fails: the search
    goes on from entry 1 with c, b left where it was, instead of stopping at entry 1."""
    from types import SimpleNamespace

    from sweeper.search.amp.common import AMPState
    from sweeper.search.amp.fast import FastAMP

    fp16, w8a8 = Precision.parse("fp16"), Precision.parse("w8a8")
    base = Profile.uniform(["a", "b", "c"], fp16)
    plist = [base, base.with_groups({"a": w8a8}), base.with_groups({"a": w8a8, "b": w8a8}),
             base.with_groups({"a": w8a8, "b": w8a8, "c": w8a8})]
    f = FastAMP.__new__(FastAMP)
    f.cost = lambda p: float(sum(4 if p[g] == fp16 else 1 for g in ("a", "b", "c")))
    f.pareto_list, f.list_costs = plist, [f.cost(p) for p in plist]
    f.moves = [("a", w8a8, 1.0), ("b", w8a8, 2.0), ("c", w8a8, 3.0)]
    f._keys = [p.key for p in plist]
    f.workers, f.cost_tolerance, f.stopped_within_tolerance = 1, 0.02, False
    f.rebuild_limit, f.rebuilds, f._frozen = 3, [], set()
    state = AMPState()
    for i, metric in ((0, 1.0), (1, 0.95), (2, 0.5)):
        state.add(SimpleNamespace(metric=metric, name=f"fast:{i}"), plist[i])
    ok = lambda m: m >= 0.9  # noqa: E731
    assert f._search_probes(state, ok) == {} and f.bounds(state, ok) == (1, 2)
    assert f._rebuild(state, ok)
    assert f.pareto_list == [plist[1], plist[1].with_groups({"c": w8a8})] and f.rebuilds[0]["frozen_group"] == "b"
    assert list(f._search_probes(state, ok).values()) == [plist[1].with_groups({"c": w8a8})]
    state.add(SimpleNamespace(metric=0.5, name="fast:1"), plist[1].with_groups({"c": w8a8}))  # c breaks it too
    assert f._rebuild(state, ok) is False  # nothing left to lower: the answer stays entry 1 of the first list


def _fp16_saturating_mlp() -> tuple[object, dict[str, np.ndarray]]:
    """x -> fc1 -> Relu -> fc2 -> Relu -> fc3, fc1's channel 0 held at 1e5 (a bias): float16 overflows there (so
    uniform fp16 fails), an 8-bit grid spanning 1e5 rounds fc1's other channels (about 100) to zero (w8a8 fails),
    a 16-bit grid keeps them; fc2 and fc3 are harmless at 8 bits."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    w1 = (rng.standard_normal((16, 16)) * 60).astype(np.float32)
    w1[:, 0] = 0.0
    b1 = np.zeros(16, np.float32)
    b1[0] = 2e5
    w2 = (rng.standard_normal((16, 16)) * 0.01).astype(np.float32)
    w2[0, :] = rng.standard_normal(16).astype(np.float32) * 5e-5
    w3 = (rng.standard_normal((16, 4)) * 0.3).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (w3, "w3"))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"),
             helper.make_node("Add", ["h1", "b1"], ["h1b"], name="fc1_bias"),
             helper.make_node("Relu", ["h1b"], ["r1"], name="relu1"),
             helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="fc2"),
             helper.make_node("Relu", ["h2"], ["r2"], name="relu2"),
             helper.make_node("MatMul", ["r2", "w3"], ["y"], name="fc3")]
    graph = helper.make_graph(nodes, "sat", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model, {"x": np.random.default_rng(6).standard_normal((64, 16)).astype(np.float32)}


def test_fast_amp_rebuilds_its_list_from_a_passing_uniform_when_float16_saturates(tmp_path: Path) -> None:
    """The costliest candidate (fp16, the list's baseline) fails by saturating, w8a16 passes: a failing fp16
    profile says nothing about integer grids (w8a16 is evaluated, not skipped as failing), and the list is
    searched again from w8a16, so fast finds the mix greedy finds, not uniform w8a16 (Magika, from the zoo)."""
    from sweeper.search.amp.fast import at_least

    fp16, w8a16, w8a8 = (Precision.parse(n) for n in ("fp16", "w8a16", "w8a8"))
    assert not at_least(fp16, w8a16) and not at_least(w8a16, fp16) and at_least(w8a16, w8a8)
    assert at_least(Precision.parse("fp32"), w8a8) and not at_least(w8a8, w8a16)
    model, data = _fp16_saturating_mlp()
    ws = Workspace(load_experiment(write_experiment(tmp_path, model, data, max_drop=0.02,
                                                    candidates="[w8a8, w8a16, fp16]")))
    pool = ws.pool()
    try:
        fast = run_amp(ws, pool, None, candidates=list(ws.exp.candidates), algorithm="fast", measure=False).doc
        greedy = run_amp(ws, pool, None, candidates=list(ws.exp.candidates), algorithm="greedy", measure=False).doc
    finally:
        pool.close()
        ws.close()
    by_profile = {e["profile"]: e["metric"] for e in fast["all"]}
    assert by_profile["fp16"] < 0.98 <= by_profile["w8a16"] and by_profile["w8a8"] < 0.98  # the premise
    assert fast["cheapest_passing_uniform"] == "uniform:w8a16" and "w8a16" not in fast["fast"]["uniform_skipped_as_failing"]
    assert fast["fast"]["rebased"]["to"] == "w8a16"
    w8a16_cost = next(e["cost"] for e in fast["all"] if e["profile"] == "w8a16")
    assert fast["accepted"]["mixed"] and fast["accepted"]["cost"] < w8a16_cost
    assert fast["accepted"]["cost"] <= 1.1 * greedy["accepted"]["cost"]
