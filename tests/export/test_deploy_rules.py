"""Numbers a deployment would not represent are never produced silently (issue: real models, part 1).

Tiny graphs built with onnx.helper that reproduce what real models hit: BatchNorm-folded biases that do
not fit int32 at w16a16, weights shared between layers, If bodies, values beyond float16, old opsets.
Each checks the simulation against FP32 or against the exported QDQ model (ONNX Runtime, optimizations off).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from sweeper.export import export_qdq
from sweeper.model.graph import ModelGraph
from sweeper.model.intake import opset_report, prepare_model
from sweeper.model.session import reference_session
from sweeper.quant import calibration
from sweeper.quant.profile import Profile
from sweeper.sim.encodings import EncodingTable, QuantConfig
from sweeper.sim.quantsim import QuantSim

PRECS = ["fp32", "w8a8", "w8a16", "w16a16", "fp16", "w4a8", "w4a16", "w4a4"]


def _t(a: np.ndarray, name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(a, np.float32), name)


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


class Built:
    """A model prepared as a Workspace prepares it, calibrated, with a QuantSim over PRECS."""

    def __init__(self, model: onnx.ModelProto, data: dict[str, np.ndarray]) -> None:
        self.prepared = prepare_model(model)
        self.graph = ModelGraph(self.prepared)
        self.data = data
        stats = calibration.collect(self.prepared, self.graph.activations, [], data, self.graph.input_names,
                                    batch_size=16)
        self.table = EncodingTable(self.graph, stats, QuantConfig())
        self.sim = QuantSim(self.graph, self.table, threads=1, precisions=PRECS)
        self.plain_sim = _session(self.sim.model)
        self.fp32 = _session(self.prepared).run(None, data)

    def uniform(self, prec: str) -> Profile:
        return Profile.uniform([g.name for g in self.graph.groups], prec)

    def sim_out(self, profile: Profile) -> list[np.ndarray]:
        """The simulation graph under ``profile``, run with optimizations off (as the export is run)."""
        self.sim.apply(profile)
        return self.plain_sim.run(None, {**self.sim.bound, **self.data})

    def export_out(self, profile: Profile) -> list[np.ndarray]:
        model = export_qdq(self.graph, self.table, profile)
        onnx.checker.check_model(model)
        return _session(model).run(None, self.data)

    def assert_sim_equals_export(self, profile: Profile) -> None:
        """Both with optimizations off, and QuantSim's own session vs the export's reference session."""
        for a, b in zip(self.sim_out(profile), self.export_out(profile), strict=True):
            np.testing.assert_array_equal(a, b)
        model = export_qdq(self.graph, self.table, profile)
        for a, b in zip(self.sim.run(self.data), reference_session(model).run(None, self.data), strict=True):
            np.testing.assert_array_equal(a, b)


# -- int32 biases -------------------------------------------------------------------------------------
def bn_cnn() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Conv -> BatchNorm -> Relu -> Conv -> BatchNorm: BatchNorm folding gives biases of tens and weights
    scaled by gamma/sqrt(var); at 16-bit activations and weights int32 cannot hold them at in x w scale."""
    rng = np.random.default_rng(0)

    def bn(prefix: str, c: int) -> list[onnx.TensorProto]:
        return [_t(rng.uniform(0.5, 2.0, c), prefix + "_g"), _t(rng.normal(0, 5, c), prefix + "_b"),
                _t(rng.normal(0, 5, c), prefix + "_m"), _t(rng.uniform(0.005, 0.02, c), prefix + "_v")]

    inits = [_t(rng.normal(0, 0.3, (8, 3, 3, 3)), "w1"), *bn("bn1", 8), _t(rng.normal(0, 0.3, (4, 8, 3, 3)), "w2"),
             *bn("bn2", 4)]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("BatchNormalization", ["c1", "bn1_g", "bn1_b", "bn1_m", "bn1_v"], ["n1"], name="bn1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("BatchNormalization", ["c2", "bn2_g", "bn2_b", "bn2_m", "bn2_v"], ["y"], name="bn2"),
    ]
    graph = helper.make_graph(nodes, "bn_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model, {"x": rng.uniform(0, 1, (32, 3, 8, 8)).astype(np.float32)}


@pytest.fixture(scope="module")
def bn_built() -> Built:
    return Built(*bn_cnn())


def test_batchnorm_folded_conv_at_w16a16_is_within_1e_3_of_fp32(bn_built: Built) -> None:
    b = bn_built
    assert not any(n.op_type == "BatchNormalization" for n in b.prepared.graph.node)  # folded by intake
    profile = b.uniform("w16a16")
    # the nominal int32 grid (input scale x weight scale) cannot hold these biases: they are rescaled, reported
    rescaled = b.table.adjustments(profile)["bias_rescaled"]
    assert "conv1" in {r["layer"] for r in rescaled}  # input in [0, 1]: 16-bit scale 1.5e-5
    assert all(r["channels_rescaled"] > 0 and r["max_scale_factor"] > 1 for r in rescaled)
    ref = b.fp32[0]
    out = b.sim_out(profile)[0]
    assert np.abs(out - ref).max() <= 1e-3 * np.abs(ref).max()
    b.assert_sim_equals_export(profile)
    # at w16a16 the model is at least as good as at w8a16
    err8 = np.abs(b.sim_out(b.uniform("w8a16"))[0] - ref).max()
    assert np.abs(out - ref).max() <= err8


@pytest.mark.parametrize("prec", PRECS)
def test_bias_rule_sim_equals_export_at_every_precision(bn_built: Built, prec: str) -> None:
    bn_built.assert_sim_equals_export(bn_built.uniform(prec))


def test_exported_encodings_name_the_rescaled_biases(bn_built: Built) -> None:
    doc = bn_built.table.to_aimet(bn_built.uniform("w16a16"))
    section = doc["sweeper"]
    assert {e["name"] for e in section["bias_encodings"]} == set(bn_built.graph.bias_quantizers)
    assert {r["bias"] for r in section["bias_rescaled"]} <= set(bn_built.graph.bias_quantizers)
    assert section["bias_rescaled"]
    for e in section["bias_encodings"]:
        assert e["bw"] == 32 and len(e["scale"]) == len(e["offset"])
    # at w8a8 the nominal grid holds them: nothing to report
    assert bn_built.table.to_aimet(bn_built.uniform("w8a8"))["sweeper"]["bias_rescaled"] == []


def test_int32_bias_rule_never_saturates() -> None:
    from sweeper.quant.bias import INT32_MAX, int32_bias

    b = np.array([0.5, -40.0, 1e-3, 0.0], np.float32)
    nominal = np.full(4, 1e-10, np.float32)
    enc = int32_bias(b, nominal)
    assert np.abs(enc.q).max() <= INT32_MAX
    assert enc.rescaled.tolist() == [True, True, False, False]
    np.testing.assert_allclose(enc.dequantize(), b, rtol=1e-6, atol=1e-9)
    per_tensor = int32_bias(b, np.array([1e-10], np.float32))
    assert per_tensor.scale.size == 1 and np.abs(per_tensor.q).max() <= INT32_MAX
    np.testing.assert_allclose(per_tensor.dequantize(), b, atol=40.0 / 2**29)


# -- shared weights -----------------------------------------------------------------------------------
def shared_weight_model() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Two Convs read one weight initializer, each with its own bias; a Gemm weight also feeds an Add."""
    rng = np.random.default_rng(1)
    inits = [_t(rng.normal(0, 0.3, (4, 4, 3, 3)), "w"), _t(rng.normal(0, 0.1, 4), "ba"),
             _t(rng.normal(0, 0.1, 4), "bb"), _t(rng.normal(0, 0.3, (16, 16)), "wg")]
    nodes = [
        helper.make_node("Conv", ["x", "w", "ba"], ["ca"], pads=[1, 1, 1, 1], name="conv_a"),
        helper.make_node("Relu", ["ca"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["ra", "w", "bb"], ["cb"], pads=[1, 1, 1, 1], name="conv_b"),
        helper.make_node("Flatten", ["cb"], ["f"], axis=2, name="flat"),
        helper.make_node("Gemm", ["x2", "wg"], ["g"], name="gemm"),
        helper.make_node("Add", ["g", "wg"], ["y2"], name="add_w"),
    ]
    graph = helper.make_graph(
        nodes, "shared",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 4, 4]),
         helper.make_tensor_value_info("x2", TensorProto.FLOAT, [16, 16])],
        [helper.make_tensor_value_info("f", TensorProto.FLOAT, ["N", 4, 16]),
         helper.make_tensor_value_info("y2", TensorProto.FLOAT, [16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    data = {"x": rng.normal(0, 1, (16, 4, 4, 4)).astype(np.float32),
            "x2": rng.normal(0, 1, (16, 16)).astype(np.float32)}
    return model, data


@pytest.fixture(scope="module")
def shared_built() -> Built:
    return Built(*shared_weight_model())


def test_shared_weight_is_one_quantizer_in_one_group(shared_built: Built) -> None:
    g = shared_built.graph
    assert g.weight_quantizers["w"].ops == ["conv_a", "conv_b"]
    by = g.group_of()
    assert by["w"] == by["x"] == by["ra"]  # both users and both their inputs choose one precision
    assert {b: bq.op for b, bq in g.bias_quantizers.items()} == {"ba": "conv_a", "bb": "conv_b"}


@pytest.mark.parametrize("prec", [*PRECS, "mixed"])
def test_shared_weight_sim_equals_export(shared_built: Built, prec: str) -> None:
    b = shared_built
    if prec == "mixed":
        cycle = ["w4a8", "w16a16", "fp16", "w8a8"]
        profile = Profile.make({gr.name: cycle[k % 4] for k, gr in enumerate(b.graph.groups)})
    else:
        profile = b.uniform(prec)
    b.assert_sim_equals_export(profile)
    if prec == "w4a8":  # every reader sees the quantized weight (the Add reads it too)
        fp = b.fp32[1]
        assert not np.array_equal(b.sim_out(profile)[1], fp)


# -- subgraphs ----------------------------------------------------------------------------------------
def if_model() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """MatMul -> If(sum > 0) { MatMul with a body weight } else { Relu }: the body is left float, reported."""
    rng = np.random.default_rng(2)
    body_w = numpy_helper.from_array(rng.normal(0, 0.3, (8, 8)).astype(np.float32), "wb")
    then_g = helper.make_graph([helper.make_node("MatMul", ["h", "wb"], ["t_out"], name="body_mm")], "then", [],
                               [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, None)], [body_w])
    else_g = helper.make_graph([helper.make_node("Relu", ["h"], ["e_out"], name="body_relu")], "else", [],
                               [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, None)])
    inits = [_t(rng.normal(0, 0.3, (8, 8)), "w0"), _t(np.zeros(()), "zero")]
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["h"], name="mm0"),
        helper.make_node("ReduceSum", ["h"], ["s"], keepdims=0, name="sum"),
        helper.make_node("Greater", ["s", "zero"], ["cond"], name="gt"),
        helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g, name="branch"),
    ]
    graph = helper.make_graph(nodes, "if_model", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model, {"x": rng.normal(0.5, 1, (16, 8)).astype(np.float32)}


def test_if_bodies_are_reported_as_left_float_and_sim_equals_export() -> None:
    b = Built(*if_model())
    left = b.graph.left_float()
    assert [(e["node"], e["op"], e["body_weight_ops"], e["body_parameters"]) for e in left] == [("branch", "If", 1, 64)]
    for prec in ("w8a8", "w16a16", "fp16", "w4a8"):
        b.assert_sim_equals_export(b.uniform(prec))


# -- float16 ------------------------------------------------------------------------------------------
def big_values_model() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """x * 1e5 (beyond float16's 65504) -> MatMul -> Softmax-free output."""
    rng = np.random.default_rng(3)
    inits = [_t(np.array(1e5), "k"), _t(rng.normal(0, 0.3, (8, 4)), "w"), _t(np.array(1e-5), "k2")]
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["big"], name="scale_up"),
        helper.make_node("Tanh", ["big"], ["t"], name="tanh"),
        helper.make_node("Mul", ["big", "k2"], ["small"], name="scale_down"),
        helper.make_node("Add", ["small", "t"], ["s"], name="add"),
        helper.make_node("MatMul", ["s", "w"], ["y"], name="mm"),
    ]
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model, {"x": rng.normal(0, 1, (16, 8)).astype(np.float32)}


def test_fp16_saturates_like_a_float16_deployment_and_is_reported() -> None:
    b = Built(*big_values_model())
    profile = b.uniform("fp16")
    out = b.sim_out(profile)[0]
    assert np.isfinite(out).all()  # a plain cast would give inf (and inf - inf = NaN further on)
    b.assert_sim_equals_export(profile)
    saturated = {e["tensor"] for e in b.table.adjustments(profile)["fp16_saturated"]}
    assert "big" in saturated
    assert b.table.adjustments(b.uniform("w8a8"))["fp16_saturated"] == []


# -- opsets -------------------------------------------------------------------------------------------
def old_opset_model(opset: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Conv -> Clip(0, 6) (attributes before opset 11, inputs from 11) -> Flatten -> Gemm."""
    rng = np.random.default_rng(4)
    inits = [_t(rng.normal(0, 0.3, (4, 2, 3, 3)), "w1"), _t(rng.normal(0, 0.1, 4), "b1"),
             _t(rng.normal(0, 0.3, (5, 64)), "w2"), _t(rng.normal(0, 0.1, 5), "b2")]
    if opset >= 11:
        inits += [_t(np.array(0.0), "lo"), _t(np.array(6.0), "hi")]
        clip = helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"], name="clip")
    else:
        clip = helper.make_node("Clip", ["c1"], ["r1"], min=0.0, max=6.0, name="clip")
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv"), clip,
             helper.make_node("Flatten", ["r1"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w2", "b2"], ["y"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "old", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 6
    return model, {"x": rng.normal(0, 1, (16, 2, 4, 4)).astype(np.float32)}


@pytest.mark.parametrize("opset", [9, 11, 12])
def test_old_opsets_are_converted_once_at_intake(opset: int) -> None:
    b = Built(*old_opset_model(opset))
    assert opset_report(b.prepared) == {"original": opset, "used": 21, "converted": True}
    for prec in ("w8a8", "w16a16", "w4a8", "fp16"):
        profile = b.uniform(prec)
        exported = export_qdq(b.graph, b.table, profile)
        assert max(o.version for o in exported.opset_import if o.domain in ("", "ai.onnx")) == 21
        assert not any(n.domain == "com.microsoft" for n in exported.graph.node)
        b.assert_sim_equals_export(profile)


# -- 8-bit weights for ONNX Runtime's fused kernels ---------------------------------------------------------
def test_8bit_weights_are_uint8_with_zero_point_128_and_the_same_values(bn_built: Built) -> None:
    b = bn_built
    profile = b.uniform("w8a8")
    u8 = export_qdq(b.graph, b.table, profile)
    s8 = export_qdq(b.graph, b.table, profile, u8_weights=False)
    def weight_dq(model: onnx.ModelProto) -> list[tuple[onnx.TensorProto, onnx.TensorProto]]:
        inits = {t.name: t for t in model.graph.initializer}
        return [(inits[n.input[0]], inits[n.input[2]]) for n in model.graph.node
                if n.op_type == "DequantizeLinear" and n.output[0] in b.graph.weight_quantizers]

    assert len(weight_dq(u8)) == len(b.graph.weight_quantizers) == 2
    for q, zp in weight_dq(u8):
        assert q.data_type == zp.data_type == TensorProto.UINT8
        assert set(numpy_helper.to_array(zp).tolist()) == {128}
    assert all(q.data_type == TensorProto.INT8 for q, _ in weight_dq(s8))
    np.testing.assert_array_equal(_session(u8).run(None, b.data)[0], _session(s8).run(None, b.data)[0])
