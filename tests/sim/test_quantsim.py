from __future__ import annotations

import numpy as np
import onnxruntime as ort
from conftest import attention_data, attention_model, cnn_data, cnn_model

from sweeper.model.intake import prepare_model
from sweeper.quant.profile import Profile


def _fp32(model, data):  # noqa: ANN001, ANN202
    sess = ort.InferenceSession(prepare_model(model).SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, data)[0]


def _uniform(graph, prec: str) -> Profile:  # noqa: ANN001
    return Profile.uniform([g.name for g in graph.groups], prec)


def test_fp32_profile_is_the_float_model(build_sim) -> None:  # noqa: ANN001
    data = cnn_data()
    graph, _, sim = build_sim(cnn_model(), data)
    sim.apply(_uniform(graph, "fp32"))
    # equal up to kernel rounding (the sim's weights are run-time inputs, so ORT picks other conv kernels)
    np.testing.assert_allclose(sim.run(data)[0], _fp32(cnn_model(), data), rtol=0, atol=1e-5)


def test_profiles_switch_without_rebuilding_the_session(build_sim) -> None:  # noqa: ANN001
    data = cnn_data()
    graph, _, sim = build_sim(cnn_model(), data)
    session = sim.session
    outs = {}
    for prec in ["w8a8", "w4a8", "fp16", "w2a8", "w8a8"]:
        sim.apply(_uniform(graph, prec))
        outs.setdefault(prec, []).append(sim.run(data)[0])
        assert sim.session is session
    ref = _fp32(cnn_model(), data)
    err = {p: float(np.abs(o[0] - ref).mean()) for p, o in outs.items()}
    assert err["fp16"] < err["w8a8"] < err["w4a8"] < err["w2a8"]
    assert np.array_equal(outs["w8a8"][0], outs["w8a8"][1])  # switching back gives the same result


def _branch_constants(sim) -> dict[str, np.ndarray]:  # noqa: ANN001
    from onnx import numpy_helper

    found: dict[str, np.ndarray] = {}

    def walk(graph) -> None:  # noqa: ANN001
        for t in graph.initializer:
            found[t.name] = numpy_helper.to_array(t)
        for n in graph.node:
            for a in n.attribute:
                if a.g.name:
                    walk(a.g)

    walk(sim.model.graph)
    return found


def test_layer_branches_hold_exact_fake_quantized_weights(build_sim) -> None:  # noqa: ANN001
    """Each precision's branch holds DequantizeLinear(QuantizeLinear(w)) as a constant (ORT prepacks it)."""
    data = cnn_data()
    graph, table, sim = build_sim(cnn_model(), data)
    consts = _branch_constants(sim)
    enc = table.weight("w1", 4)
    w = graph.weight_array("w1")
    assert np.array_equal(consts["w1::w4a8::w"], enc.dequantize(enc.quantize(w)))
    assert all(len(np.unique(ch)) <= 16 for ch in consts["w1::w4a8::w"])  # per output channel
    assert np.array_equal(consts["w1::fp32::w"], w)
    # the bias is int32-rounded on the grid input-scale x weight-scale, as the export stores it
    bscale = table.bias_scale("b1", _uniform(graph, "w4a8"))
    q = consts["w1::w4a8::b"] / bscale
    np.testing.assert_allclose(q, np.rint(q), atol=1e-3)
    # the choice is a run-time flag
    feeds = sim.feeds_for(_uniform(graph, "w4a8"))
    assert feeds["w1::is_w4a8"] and not feeds["w1::is_w8a8"] and "w1" not in feeds


def test_mixed_profile_changes_only_its_group(build_sim) -> None:  # noqa: ANN001
    data = cnn_data()
    graph, _, sim = build_sim(cnn_model(), data)
    first = graph.groups[0].name
    base = _uniform(graph, "fp32")
    mixed = base.with_groups({first: _uniform(graph, "w2a8")[first]})
    f_base, f_mixed = sim.feeds_for(base), sim.feeds_for(mixed)
    changed = {k for k in f_base if not np.array_equal(f_base[k], f_mixed[k])}
    assert changed and all(k.startswith(("x::", "w1::")) for k in changed)
    assert any(k.startswith("w1::is_") for k in changed) and any(k.startswith("x::") for k in changed)


def test_masking_sentinels_keep_attention_intact(build_sim) -> None:  # noqa: ANN001
    data = attention_data()
    graph, table, sim = build_sim(attention_model(), data)
    rep = table.stats.sentinel_report()
    assert set(rep) == {"madd", "sm"}
    assert table.always_float("madd") and table.always_float("sm")  # the mask, and the scores it masks
    ref = _fp32(attention_model(), data)
    masked = np.broadcast_to(data["m"] == 0, (len(data["m"]), 6, 6))  # [sample, query, key]
    for prec, floor in [("w8a16", 0.999), ("w8a8", 0.99)]:
        sim.apply(_uniform(graph, prec))
        out = sim.run(data)[0]
        cos = np.sum(out * ref, -1) / (np.linalg.norm(out, axis=-1) * np.linalg.norm(ref, axis=-1))
        assert cos.mean() > floor, (prec, cos.mean())
    from sweeper.sim.quantsim import QuantSim

    probe = QuantSim(graph, table, threads=1, precisions=["w8a8", "w16a16"], extra_outputs=["p"])
    for prec in ("w8a8", "w16a16"):
        probe.apply(_uniform(graph, prec))
        p = probe.run(data)[1]
        assert np.all(p[masked] == 0.0), prec  # no attention weight reaches a masked position


def test_without_sentinel_handling_attention_collapses(build_sim) -> None:  # noqa: ANN001
    """The same model with a min-max range over the sentinel (what tools without handling do) breaks."""
    from sweeper.quant import calibration

    data = attention_data()
    old = calibration.SENTINEL_ABS
    calibration.SENTINEL_ABS = float("inf")
    try:
        graph, _, sim = build_sim(attention_model(), data)
    finally:
        calibration.SENTINEL_ABS = old
    ref = _fp32(attention_model(), data)
    sim.apply(_uniform(graph, "w8a16"))
    out = sim.run(data)[0]
    cos = np.sum(out * ref, -1) / (np.linalg.norm(out, axis=-1) * np.linalg.norm(ref, axis=-1))
    assert cos.mean() < 0.99


def test_bound_runs_equal_plain_session_runs_across_switches(build_sim) -> None:  # noqa: ANN001
    """QuantSim.run binds the profile's control inputs once (BoundRunner); every run must equal a plain
    ``session.run`` with all feeds, after any sequence of switches, and a feed that names a control input
    overrides it for that run only."""
    data = cnn_data()
    graph, _, sim = build_sim(cnn_model(), data)
    first = graph.groups[0].name
    profiles = [_uniform(graph, "w8a8"), _uniform(graph, "w2a8"),
                _uniform(graph, "w8a8").with_groups({first: _uniform(graph, "fp16")[first]}), _uniform(graph, "fp32")]
    for p in [*profiles, profiles[0]]:
        sim.apply(p)
        plain = sim.session.run(None, {**sim.bound, **data})
        assert all(np.array_equal(a, b) for a, b in zip(sim.run(data), plain, strict=True)), p.key
    half = {k: v[: len(v) // 2] for k, v in data.items()}  # another batch size: outputs are not reused
    assert sim.run(half)[0].shape[0] == len(next(iter(half.values())))
    flag = next(k for k in sim.bound if k.startswith("w1::is_"))
    flipped = {**data, flag: np.array(not sim.bound[flag])}
    assert not np.array_equal(sim.run(flipped)[0], sim.run(data)[0])  # the override applied ...
    assert np.array_equal(sim.run(data)[0], sim.session.run(None, {**sim.bound, **data})[0])  # ... once


def test_a_bound_run_keeps_a_scalar_feed_a_scalar() -> None:
    """A data feed of shape () stays rank 0 (np.ascontiguousarray made it shape (1,): prefix reuse feeds scalar
    shape arithmetic to its suffix sessions, and Swin's and GPT-2's Unsqueeze -> Concat then failed on rank 2)."""
    from onnx import TensorProto, helper, numpy_helper

    from sweeper.model.session import BoundRunner, ort_session

    nodes = [helper.make_node("Unsqueeze", ["n", "axes"], ["u"]), helper.make_node("Concat", ["u", "c"], ["y"], axis=0),
             helper.make_node("Add", ["x", "k"], ["z"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("n", TensorProto.INT64, []),
                     helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                     helper.make_tensor_value_info("k", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [2]), helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(np.array([0], np.int64), "axes"), numpy_helper.from_array(np.array([7], np.int64), "c")])
    runner = BoundRunner(ort_session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])))
    runner.bind({"k": np.array(1.0, np.float32)})
    x = np.arange(6, dtype=np.float32).reshape(3, 2).T  # not C-contiguous: bound as a contiguous copy
    y, z = runner.run({"n": np.array(5, np.int64), "x": x})
    assert y.tolist() == [5, 7] and np.array_equal(z, x + 1)
