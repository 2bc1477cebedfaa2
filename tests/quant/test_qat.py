"""QAT building blocks on tiny onnx.helper graphs: the torch interpreter of ONNX graphs, fake-quant that
equals the QuantSim, the straight-through gradients, and learned encodings that load back exactly."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import cnn_data, cnn_model
from onnx import TensorProto, helper, numpy_helper

from sweeper.errors import SweeperError
from sweeper.model.graph import ModelGraph
from sweeper.model.session import ort_session
from sweeper.quant.precision import Precision
from sweeper.quant.profile import Profile
from sweeper.sim.encodings import EncodingTable, QuantConfig
from sweeper.sim.quantsim import QuantSim

torch = pytest.importorskip("torch")

from sweeper.techniques.qat import FakeQuant, QATModel, learned_table, run_torch  # noqa: E402
from sweeper.techniques.torchsim import OnnxModule  # noqa: E402


def _t(rng: np.random.Generator, name: str, shape: tuple[int, ...], scale: float = 0.3) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def zoo_model() -> onnx.ModelProto:
    """Most ops the interpreter supports, BatchNormalization unfolded, one asymmetric pad."""
    rng = np.random.default_rng(3)
    inits = [_t(rng, "w1", (6, 2, 3, 3)), _t(rng, "b1", (6,), 0.1),
             numpy_helper.from_array(np.abs(rng.standard_normal(6)).astype(np.float32) + 0.5, "bn_s"),
             _t(rng, "bn_b", (6,), 0.1), _t(rng, "bn_m", (6,), 0.1),
             numpy_helper.from_array(np.abs(rng.standard_normal(6)).astype(np.float32) + 0.5, "bn_v"),
             _t(rng, "wd", (6, 1, 3, 3)), _t(rng, "w2", (12, 5)), _t(rng, "b2", (5,), 0.1),
             numpy_helper.from_array(np.array([0, -1], np.int64), "shape"),
             numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
             numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
             numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"], epsilon=1e-3),
        helper.make_node("Clip", ["bn", "lo", "hi"], ["r6"]),
        helper.make_node("Conv", ["r6", "wd"], ["dw"], group=6, pads=[0, 0, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["dw"], ["r"]),
        helper.make_node("AveragePool", ["r"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("MaxPool", ["r"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Concat", ["ap", "mp"], ["cat"], axis=1),
        helper.make_node("GlobalAveragePool", ["cat"], ["gap"]),
        helper.make_node("Reshape", ["gap", "shape"], ["flat"]),
        helper.make_node("Mul", ["flat", "half"], ["m"]),
        helper.make_node("Sigmoid", ["m"], ["sg"]),
        helper.make_node("Add", ["m", "sg"], ["a"]),
        helper.make_node("Gemm", ["a", "w2", "b2"], ["g"]),
        helper.make_node("Transpose", ["g"], ["gt"], perm=[1, 0]),
        helper.make_node("Identity", ["gt"], ["gi"]),
        helper.make_node("Transpose", ["gi"], ["g2"], perm=[1, 0]),
        helper.make_node("Softmax", ["g2"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(nodes, "zoo", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("make", [zoo_model, cnn_model], ids=["zoo", "cnn"])
def test_interpreter_matches_onnxruntime(make) -> None:  # noqa: ANN001
    model = make()
    x = np.random.default_rng(0).standard_normal((4, model.graph.input[0].type.tensor_type.shape.dim[1].dim_value,
                                                  8, 8)).astype(np.float32)
    ref = ort_session(model, 1).run(None, {"x": x})[0]
    out = run_torch(OnnxModule(model), ["x"])({"x": x})[0]
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_unsupported_op_is_named() -> None:
    model = cnn_model()
    model.graph.node.append(helper.make_node("Einsum", ["y", "y"], ["z"], equation="ij,ij->i"))
    with pytest.raises(SweeperError, match="Einsum"):
        OnnxModule(model)


def _mixed(graph: ModelGraph) -> Profile:
    names = [g.name for g in graph.groups]
    precs = ["w4a8", "fp32", "fp16"]  # cnn_model has three groups
    return Profile.make({n: Precision.parse(precs[i % len(precs)]) for i, n in enumerate(names)})


@pytest.mark.parametrize("prec", ["w8a8", "w4a8", "w4a4", "w2a8", "mixed"])
def test_fake_quant_forward_equals_quantsim(build_sim, prec: str) -> None:  # noqa: ANN001
    data = cnn_data(48)
    graph, table, sim = build_sim(cnn_model(), data, QuantConfig())
    profile = _mixed(graph) if prec == "mixed" else Profile.uniform([g.name for g in graph.groups], prec)
    sim.apply(profile)
    ref = sim.run(data)[0]
    qat = QATModel(graph, table, profile)
    out = run_torch(qat, qat.input_names)(data)[0]
    # the same values up to float summation order (torch and ORT convolutions)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4 * float(np.abs(ref).max()))
    if prec == "mixed":  # each group keeps its own bit widths; float groups have no integer quantizer
        bits = {w: q.bits for w, q in zip(qat.weight_names, qat.weight_q, strict=True) if isinstance(q, FakeQuant)}
        for w in graph.weight_quantizers:
            p = profile[table.group_of[w]]
            assert bits.get(w) == (None if p.is_float else p.weight_bits), w


def test_straight_through_gradients_reach_weights_scales_and_offsets(build_sim) -> None:  # noqa: ANN001
    data = cnn_data(16)
    graph, table, _ = build_sim(cnn_model(), data, QuantConfig())
    qat = QATModel(graph, table, Profile.uniform([g.name for g in graph.groups], "w4a8"))
    out = qat(torch.from_numpy(data["x"]))
    out.square().mean().backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in qat.net.params)
    assert all(float(q.log_gain.grad.abs().sum()) > 0 for q in qat.weight_q)
    assert all(q.log_gain.grad is not None for q in qat.act_q)
    assert sum(float(q.log_gain.grad.abs().sum()) > 0 for q in qat.act_q) >= len(qat.act_q) - 1
    asym = [q for q in qat.act_q if not q.symmetric]
    assert asym and any(q.zero_point.grad is not None and float(q.zero_point.grad.abs().sum()) > 0 for q in asym)
    assert all(not q.zero_point.requires_grad for q in qat.weight_q)  # symmetric weights: fixed zero point


def test_learned_encodings_round_trip_into_a_quantsim(build_sim) -> None:  # noqa: ANN001
    data = cnn_data(32)
    graph, table, _ = build_sim(cnn_model(), data, QuantConfig())
    profile = Profile.uniform([g.name for g in graph.groups], "w4a8")
    qat = QATModel(graph, table, profile)
    with torch.no_grad():  # what training does: other weights, other scales and zero points
        for k, p in enumerate(qat.net.params):
            p.mul_(1.0 + 0.05 * (k + 1))
        for q in [*qat.act_q, *qat.weight_q]:
            q.log_gain.add_(float(np.log(1.3)))
        for q in qat.act_q:
            if not q.symmetric:
                q.zero_point.add_(3.0)
    trained = qat.trained_onnx()
    g2, t2 = learned_table(trained, qat, table)
    doc = t2.to_aimet(profile)
    g3 = ModelGraph(onnx.load_from_string(trained.SerializeToString()))
    t3 = EncodingTable(g3, table.stats, table.config)
    t3.load_aimet(doc)
    act, weights = qat.encodings()
    t = next(iter(act))
    np.testing.assert_array_equal(t3.act_encoding(t, Precision.parse("w4a8")).scale, act[t].scale)
    np.testing.assert_array_equal(t3.act_encoding(t, Precision.parse("w4a8")).offset, act[t].offset)
    w = next(iter(weights))
    np.testing.assert_array_equal(t3.weight(w, 4).scale, weights[w].scale)
    assert not np.array_equal(t3.weight(w, 4).scale, table.weight(w, 4).scale)
    sim = QuantSim(g3, t3, precisions=["w4a8"])
    sim.apply(profile)
    ref = sim.run(data)[0]
    out = run_torch(qat, qat.input_names)(data)[0]
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4 * float(np.abs(ref).max()))
    del g2


def test_qat_step_refuses_an_unsupported_model_up_front(tmp_path) -> None:  # noqa: ANN001
    from conftest import write_experiment

    import sweeper
    from sweeper.search.qat import QATStep

    model = cnn_model()
    relu2 = next(i for i, n in enumerate(model.graph.node) if n.name == "relu2")
    model.graph.node[relu2].CopyFrom(helper.make_node("Softplus", ["s2"], ["r2"], name="relu2"))  # no torchsim op
    exp = write_experiment(tmp_path, model, cnn_data(16), candidates="[w8a8]")
    with sweeper.Session(exp, tracking=False, pool="local") as s, pytest.raises(SweeperError, match="Softplus"):
        QATStep(s.ws, "w4a8")
    assert not (tmp_path / "out" / "qat").exists()
