"""Prefix reuse: a profile run from the stored activations of a reference gives the full run's outputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import attention_data, attention_model, cnn_data, cnn_model

from sweeper.quant.precision import Precision
from sweeper.quant.profile import Profile
from sweeper.sim.reuse import PrefixReuse


def _batches(data: dict[str, np.ndarray], names: list[str], size: int = 8) -> list[dict[str, np.ndarray]]:
    n = len(next(iter(data.values())))
    return [{k: data[k][i:i + size] for k in names} for i in range(0, n, size)]


def _outputs(run, batches):  # noqa: ANN001, ANN202
    return [run(b) for b in batches]


def _reuse(graph, sim, data, memory_mb: float = 64.0) -> PrefixReuse:  # noqa: ANN001
    from sweeper.quant import calibration

    shapes = calibration.collect(graph.model, graph.activations, [n.output[0] for n in graph.nodes],
                                 data, graph.input_names, batch_size=8).shapes
    reuse = PrefixReuse(sim, shapes, len(next(iter(data.values()))), memory_mb)
    reuse.build(warmup=_batches(data, graph.input_names)[0])
    return reuse


def _cnn_setup(build_sim):  # noqa: ANN001, ANN202
    """The tiny CNN's sim with prefix reuse under a uniform w8a8 reference, and its data in batches."""
    data = cnn_data(32)
    graph, _, sim = build_sim(cnn_model(), data)
    reuse = _reuse(graph, sim, data)
    groups = [g.name for g in graph.groups]
    base = Profile.uniform(groups, Precision.parse("w8a8"))
    reuse.set_reference(base)
    return graph, sim, reuse, groups, base, _batches(data, graph.input_names)


def _evaluate(reuse: PrefixReuse, profile: Profile, batches):  # noqa: ANN001, ANN202
    run = reuse.run_fn(profile)
    outs = _outputs(run, batches)
    reuse.finish_run()
    return outs


@pytest.mark.parametrize("which", ["cnn", "attention"])
def test_suffix_runs_give_exactly_the_full_run_outputs(build_sim, which: str) -> None:  # noqa: ANN001
    model, data = (cnn_model(), cnn_data(32)) if which == "cnn" else (attention_model(), attention_data(32))
    graph, _, sim = build_sim(model, data)
    reuse = _reuse(graph, sim, data)
    assert reuse.cuts, "the example has cut points"
    groups = [g.name for g in graph.groups]
    base = Profile.uniform(groups, Precision.parse("w8a16"))
    batches = _batches(data, graph.input_names)
    reuse.set_reference(base)
    _evaluate(reuse, base, batches)  # the reference stores every cut
    assert all(c.complete for c in reuse.cuts)
    for g in groups:
        for c in ("w4a4", "w2a8", "fp16"):
            p = base.with_groups({g: Precision.parse(c)})
            got = _evaluate(reuse, p, batches)
            sim.apply(p)
            want = _outputs(sim.run, batches)
            for a, b in zip(got, want, strict=True):
                for x, y in zip(a, b, strict=True):
                    assert np.array_equal(x, y), (g, c)
    assert reuse.stats["suffix_batches"] > 0  # the later groups really ran from the store
    assert reuse.stats["captures"] == 1  # and no profile needed a second full run to store anything


def test_full_runs_store_the_prefix_they_share_and_first_change_picks_the_cut(build_sim) -> None:  # noqa: ANN001
    graph, sim, reuse, groups, base, batches = _cnn_setup(build_sim)
    last = base.with_groups({groups[-1]: Precision.parse("w4a4")})
    _evaluate(reuse, last, batches)  # not the reference, but it shares the prefix up to the last group
    assert reuse.stats["captures"] == 1 and reuse.stats["suffix_batches"] == 0
    assert all(c.complete for c in reuse.cuts)
    _evaluate(reuse, base.with_groups({groups[-1]: Precision.parse("fp16")}), batches)
    assert reuse.stats["suffix_batches"] == len(batches)
    first = base.with_groups({groups[0]: Precision.parse("w4a4")})  # changes the input quantizer: no prefix
    before = dict(reuse.stats)
    _evaluate(reuse, first, batches)
    assert reuse.stats["suffix_batches"] == before["suffix_batches"]


def test_other_data_and_a_new_reference_never_use_stale_tensors(build_sim) -> None:  # noqa: ANN001
    graph, sim, reuse, groups, base, batches = _cnn_setup(build_sim)
    _evaluate(reuse, base, batches)
    p = base.with_groups({groups[-1]: Precision.parse("w4a4")})
    other = _batches(cnn_data(16, seed=7), graph.input_names)  # inputs the reference never ran on
    got = _evaluate(reuse, p, other)
    sim.apply(p)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(got, _outputs(sim.run, other), strict=True))
    assert reuse.stats["full_batches"] == len(other)
    reuse.set_reference(Profile.uniform(groups, Precision.parse("w4a8")))  # the store belongs to the old one
    assert not any(c.complete for c in reuse.cuts)
    got = _evaluate(reuse, p, batches)
    sim.apply(p)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(got, _outputs(sim.run, batches), strict=True))


def test_memory_budget_bounds_the_store(build_sim) -> None:  # noqa: ANN001
    data = cnn_data(32)
    graph, _, sim = build_sim(cnn_model(), data)
    assert not _reuse(graph, sim, data, memory_mb=1e-6).cuts  # nothing fits: every run is a full run
    roomy = _reuse(graph, sim, data, memory_mb=64)
    roomy.budget = 1.0  # the real tensors exceed the budget: cuts are dropped while storing
    roomy.set_reference(Profile.uniform([g.name for g in graph.groups], Precision.parse("w8a8")))
    _evaluate(roomy, roomy.reference, _batches(data, graph.input_names))
    assert not roomy.cuts


def test_a_complete_store_moves_to_another_worker(build_sim) -> None:  # noqa: ANN001
    """What one worker stored under the reference, another takes instead of computing it (Ray hands it over
    through the object store); a store for another reference is refused."""
    graph, sim, reuse, groups, base, batches = _cnn_setup(build_sim)
    assert reuse.export() is None  # nothing complete yet
    _evaluate(reuse, base, batches)
    payload = reuse.export()
    assert payload is not None and payload["reference"] == base.key
    _, sim2, other, _, _, _ = _cnn_setup(build_sim)
    p = base.with_groups({groups[-1]: Precision.parse("w2a8")})
    stranger = dict(payload, reference=Profile.uniform(groups, Precision.parse("w4a4")).key)
    assert not other.install(stranger) and not other.complete()
    assert other.install(payload) and other.complete()
    got = _evaluate(other, p, batches)
    assert other.stats["captures"] == 0 and other.stats["suffix_batches"] == len(batches)
    sim2.apply(p)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(got, _outputs(sim2.run, batches), strict=True))


def _two_output_mlp() -> onnx.ModelProto:
    """x -> fc1 -> Relu -> h (an output too) -> fc2 -> Relu -> fc3 -> y: ``h`` is computed before later cuts."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.4).astype(np.float32), n)
             for n, s in (("w1", (8, 8)), ("b1", (8,)), ("w2", (8, 8)), ("b2", (8,)), ("w3", (4, 8)), ("b3", (4,)))]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["g1"], transB=1, name="fc1"),
             helper.make_node("Relu", ["g1"], ["h"], name="r1"),
             helper.make_node("Gemm", ["h", "w2", "b2"], ["g2"], transB=1, name="fc2"),
             helper.make_node("Relu", ["g2"], ["h2"], name="r2"),
             helper.make_node("Gemm", ["h2", "w3", "b3"], ["y"], transB=1, name="fc3")]
    graph = helper.make_graph(nodes, "two_outputs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("h", TensorProto.FLOAT, ["n", 8]),
                               helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_outputs_computed_before_the_cut_come_from_the_store_and_stay_intact(build_sim) -> None:  # noqa: ANN001
    data = {"x": np.random.default_rng(2).standard_normal((32, 8)).astype(np.float32)}
    graph, _, sim = build_sim(_two_output_mlp(), data)
    reuse = _reuse(graph, sim, data)
    assert any(c.early_outputs for c in reuse.cuts)  # some cut lies after the output h
    groups = [g.name for g in graph.groups]
    base = Profile.uniform(groups, Precision.parse("w8a8"))
    batches = _batches(data, graph.input_names)
    reuse.set_reference(base)
    _evaluate(reuse, base, batches)
    p = base.with_groups({groups[-1]: Precision.parse("w2a8")})
    for _ in range(2):  # the second time sees what a careless metric did to the first results
        run = reuse.run_fn(p)
        got = [run(b) for b in batches]
        reuse.finish_run()
        sim.apply(p)
        want = _outputs(sim.run, batches)
        assert all(np.array_equal(x, y) for a, b in zip(got, want, strict=True) for x, y in zip(a, b, strict=True))
        for outs in got:
            outs[0] *= 0  # a metric that edits its inputs in place
    assert reuse.stats["suffix_batches"] == 2 * len(batches)


def test_a_budget_overrun_drops_only_the_earliest_cuts(build_sim) -> None:  # noqa: ANN001
    data = cnn_data(64)
    graph, _, sim = build_sim(cnn_model(), data)
    roomy = _reuse(graph, sim, data)
    base = Profile.uniform([g.name for g in graph.groups], Precision.parse("w8a8"))
    batches = _batches(data, graph.input_names)
    roomy.set_reference(base)
    _evaluate(roomy, base, batches)
    assert len(roomy.cuts) >= 2
    later = set(roomy._store_names(roomy.cuts[1:]))
    total = sum(v.nbytes for v in roomy._batches[0].tensors.values()) * len(batches)
    rest = sum(v.nbytes for t, v in roomy._batches[0].tensors.items() if t in later) * len(batches)
    tight = _reuse(graph, sim, data)
    tight.budget = tight.session_bytes() + (rest + total) / 2  # all cuts do not fit, all but the first do
    tight.set_reference(base)
    _evaluate(tight, base, batches)
    assert [c.index for c in tight.cuts] == [c.index for c in roomy.cuts[1:]]
    assert all(c.complete for c in tight.cuts)
    assert all(set(b.tensors) == later for b in tight._batches)  # nothing of the dropped cut stays


def test_a_metric_that_reads_more_batches_later_never_meets_a_half_stored_cut(build_sim) -> None:  # noqa: ANN001
    graph, sim, reuse, groups, base, batches = _cnn_setup(build_sim)
    positions = reuse.group_positions()
    first, second = reuse.cuts[0].index, reuse.cuts[1].index
    middle = next(g for g, p in positions.items() if first <= p < second)
    mid = base.with_groups({middle: Precision.parse("w4a4")})
    _evaluate(reuse, mid, batches[:2])  # a user metric that looks at two batches: the first cut is complete
    _evaluate(reuse, base, batches[:3])  # now three: a new batch the first cut lacks
    assert not reuse.cuts[0].complete
    got = _evaluate(reuse, mid, batches[:3])
    sim.apply(mid)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(got, _outputs(sim.run, batches[:3]), strict=True))
