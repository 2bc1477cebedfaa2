from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from sweeper.quant.calibration import TensorStats
from sweeper.quant.encoding import Encoding, compute_encoding, compute_weight_encoding, encoding_from_range
from sweeper.quant.precision import Precision
from sweeper.quant.profile import Profile


@pytest.mark.parametrize("name,w,a,flt", [("w8a8", 8, 8, False), ("W4A16", 4, 16, False), ("fp16", 16, 16, True),
                                          ("w2a8", 2, 8, False), ("w16a16", 16, 16, False)])
def test_parse_precision(name: str, w: int, a: int, flt: bool) -> None:
    p = Precision.parse(name)
    assert (p.weight_bits, p.act_bits, p.is_float) == (w, a, flt)
    assert Precision.parse(p.name) == p


@pytest.mark.parametrize("bad", ["w8", "w3a8", "int8", "w8a64", ""])
def test_parse_precision_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="expected wXaY"):
        Precision.parse(bad)


def test_partial_float_precisions_for_analysis() -> None:
    w8a8 = Precision.parse("w8a8")
    assert w8a8.weights_only().name == "w8a32" and w8a8.weights_only().acts_float
    assert w8a8.activations_only().name == "w32a8" and w8a8.activations_only().weights_float
    assert Precision.parse("w32a32").is_fp32 and Precision.parse("w8a32").weights_only().name == "w8a32"


def test_profile_key_is_stable_and_order_free() -> None:
    a = Profile.make({"g1": "w8a8", "g2": "fp16"})
    b = Profile.make({"g2": "fp16", "g1": "w8a8"})
    assert a == b and a.key == b.key and hash(a) == hash(b)
    assert a.label() == "mixed(fp16:1,w8a8:1)"
    assert Profile.from_json(a.to_json()) == a
    assert a.with_groups({"g2": Precision.parse("w8a8")}).label() == "w8a8"


def test_fake_quantize_matches_onnx_quantizelinear_half_to_even() -> None:
    enc = encoding_from_range(np.array([-1.0]), np.array([1.0]), 8, symmetric=False)
    s = float(enc.scale[0])
    zp = int(enc.zero_point[0])
    # exact halves must round to even, like QuantizeLinear
    x = (np.arange(-40, 40, dtype=np.float32) + 0.5) * np.float32(s)
    x = np.concatenate([x, np.array([-5.0, 5.0], np.float32)])  # saturation
    g = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
        "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [s]), helper.make_tensor("z", TensorProto.UINT8, [], [zp])])
    sess = ort.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    assert np.array_equal(enc.fake_quantize(x), want)


def test_symmetric_weight_grid_is_aimets() -> None:
    enc = encoding_from_range(np.array([-2.0]), np.array([1.0]), 4, symmetric=True)
    assert enc.offset[0] == -8 and enc.zero_point[0] == 0
    assert enc.scale[0] == pytest.approx(2.0 / 8)
    lo, hi = enc.bounds()
    assert lo[0] == pytest.approx(-2.0) and hi[0] == pytest.approx(7 * 0.25)


def test_aimet_roundtrip() -> None:
    enc = encoding_from_range(np.array([-1.0, -2.0]), np.array([3.0, 1.0]), 8, symmetric=True, axis=0)
    entry = enc.to_aimet("w")
    assert entry["enc_type"] == "PER_CHANNEL" and entry["bw"] == 8 and entry["is_sym"] is True
    back = Encoding.from_aimet(entry, axis=0)
    assert np.array_equal(back.scale, enc.scale) and np.array_equal(back.offset, enc.offset)


def _stats(values: np.ndarray) -> TensorStats:
    st = TensorStats()
    st.update(values)
    return st


def test_schemes_clip_outliers() -> None:
    rng = np.random.default_rng(0)
    vals = np.concatenate([rng.standard_normal(100_000).astype(np.float32), np.array([80.0], np.float32)])
    st = _stats(vals)
    mm = compute_encoding(st, 8, scheme="minmax")
    pc = compute_encoding(st, 8, scheme="percentile", percentile=99.9)
    mse = compute_encoding(st, 8, scheme="mse")
    assert mm.bounds()[1][0] >= 79.0
    assert pc.bounds()[1][0] < 10.0
    assert mse.bounds()[1][0] < mm.bounds()[1][0]
    with pytest.raises(ValueError, match="unknown calibration scheme"):
        compute_encoding(st, 8, scheme="bogus")


def test_sentinels_do_not_set_the_range() -> None:
    vals = np.array([-3.0, 1.0, 2.0, float(np.finfo(np.float32).min)] * 10, np.float32)
    st = _stats(vals)
    assert st.min == -3.0 and st.max == 2.0 and st.sentinels == 10
    enc = compute_encoding(st, 8)
    assert enc.bounds()[0][0] == pytest.approx(-3.0, abs=0.02)
    # the sentinel saturates to the lowest grid value
    assert enc.fake_quantize(np.array([np.finfo(np.float32).min], np.float32))[0] == pytest.approx(-3.0, abs=0.02)


def test_histogram_widens_keeping_counts() -> None:
    st = TensorStats()
    first = np.linspace(0, 1, 1000, dtype=np.float32)
    st.update(first)
    st.update(np.linspace(-5, 5, 1000, dtype=np.float32))
    assert st.min == -5 and st.max == 5 and st.hist is not None and int(st.hist.sum()) == 2000
    assert st.edges is not None and st.edges[0] == -5 and st.edges[-1] == 5  # re-binned over the new range
    # what the second batch added, binned afresh, leaves the first batch's 1000 values where they were:
    # uniformly over the bins covering [0, 1], and in no other bin
    kept = st.hist - np.histogram(np.linspace(-5, 5, 1000, dtype=np.float32), st.edges)[0]
    covering = (st.edges[1:] > 0) & (st.edges[:-1] < 1)
    assert kept.min() >= 0 and kept.sum() == 1000 and not kept[~covering].any()
    inner = kept[covering][1:-1]  # bins wholly inside [0, 1]: 1000 values x their width
    width = float(st.edges[1] - st.edges[0])
    assert inner.size >= 4 and np.all(np.abs(inner - 1000 * width) <= 0.5 * 1000 * width), inner


# -- parity with aimet-onnx 2.42 (issue 8 item 7) --------------------------------------------------------------
# The expected numbers below were measured with aimet-onnx 2.42.0 (bench/aimet_side.py --parity and a probe
# of QuantizationSimModel.compute_encodings on one-channel Convs); the tests need no AIMET.

@pytest.mark.parametrize("lo,hi,bits,scale", [
    (-0.5, 1.0, 4, 1.0 / 7),        # the positive end decides: max / (2**(bw-1) - 1), not absmax / 2**(bw-1)
    (-1.0, 0.9, 4, 0.9 / 7),        # positive end still decides although |min| > max
    (-1.0, 0.5, 4, 1.0 / 8),        # the negative end decides
    (-1.0, 1.0, 8, 1.0 / 127),
    (-1.0, 0.9, 8, 1.0 / 128),
    (-0.45, 1.0, 2, 0.5),           # 2 bits: absmax / 2 (AIMET counts one more positive step at 3 levels)
    (-1.0, 0.5, 2, 0.5),
])
def test_symmetric_grid_is_aimets_tight_grid(lo: float, hi: float, bits: int, scale: float) -> None:
    enc = encoding_from_range(np.array([lo]), np.array([hi]), bits, symmetric=True)
    assert enc.offset[0] == -(1 << (bits - 1)) and enc.zero_point[0] == 0
    assert float(enc.scale[0]) == pytest.approx(scale, rel=1e-6)


def test_symmetric_grid_does_not_clip_the_positive_end() -> None:
    """The behaviour that was wrong: scale = absmax / 8 put a 4-bit weight row's largest positive value one
    step outside the grid ([-8, 7] * scale), so it saturated to 7/8 of itself. On the MNIST example that was
    41 to 51 % of the 4-bit weight channels (scale ratio sweeper / AIMET 0.875) and 9 to 30 % at 8 bits."""
    w = np.array([[-0.5, 0.2, 1.0], [-1.0, 0.3, 0.9]], np.float32)
    enc = compute_weight_encoding(w, 4, symmetric=True, axis=0)
    fq = enc.fake_quantize(w)
    assert fq[0, 2] == pytest.approx(1.0, rel=1e-6) and fq[1, 2] == pytest.approx(0.9, rel=1e-6)
    assert np.all(np.abs(fq - w) <= enc.scale.reshape(-1, 1) / 2 + 1e-7)
    assert np.allclose(enc.scale, [1.0 / 7, 0.9 / 7])


@pytest.mark.parametrize("lo,hi,bits,offset", [
    (-1.0, 5.0, 4, -3),     # lo / scale = -2.5 exactly: C's round gives -3 (numpy's rint would give -2)
    (-1.0, 5.0, 8, -43),    # -42.5 -> -43
    (-3.0, 3.0, 4, -8),     # -7.5 -> -8
    (-3.0, 3.0, 8, -128),
])
def test_asymmetric_offset_rounds_half_away_from_zero_like_aimet(lo: float, hi: float, bits: int,
                                                                  offset: int) -> None:
    enc = encoding_from_range(np.array([lo]), np.array([hi]), bits, symmetric=False)
    assert int(enc.offset[0]) == offset
    assert float(enc.scale[0]) == pytest.approx((hi - lo) / ((1 << bits) - 1), rel=1e-6)
    assert enc.dequantize(enc.quantize(np.array([0.0], np.float32)))[0] == 0.0  # zero stays exact


def _conv_model() -> onnx.ModelProto:
    """x -> Conv(w, b) -> Relu -> y; channel 0's weights lose their positive peak at 4 bits unless the grid
    reaches it, so the calibrated Relu range depends on how the weights were quantized."""
    w = np.array([[[[-0.31, 0.05, 0.9]]], [[[-1.0, 0.4, 0.13]]]], np.float32)  # (2, 1, 1, 3)
    b = np.array([0.05, -0.02], np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 1, 1])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_weight_aware_statistics_see_the_quantized_weights() -> None:
    """AIMET calibrates activations with the weights already quantized: the Relu's range at 4-bit weights is
    that of the network with DequantizeLinear(QuantizeLinear(w)), not the FP32 one; biases stay float."""
    from sweeper.model.graph import ModelGraph
    from sweeper.quant.calibration import collect
    from sweeper.quant.weight_aware import collect_weight_aware, model_with_quantized_weights

    model = _conv_model()
    graph = ModelGraph(model)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 1.0, (64, 1, 1, 3)).astype(np.float32)
    x[0, 0, 0] = [-1.0, 1.0, 1.0]  # reaches both channels' peak
    data = {"x": x}

    def weight_enc(name: str, bits: int) -> Encoding:
        return compute_weight_encoding(graph.weight_array(name), bits, symmetric=True, axis=0)

    qmodel = model_with_quantized_weights(graph, weight_enc, 4)
    qw = {i.name: numpy_helper.to_array(i) for i in qmodel.graph.initializer}
    w, b = graph.weight_array("w"), graph.weight_array("b")
    assert np.array_equal(qw["w"], weight_enc("w", 4).fake_quantize(w)) and not np.array_equal(qw["w"], w)
    assert np.array_equal(qw["b"], b)  # biases are not quantized while calibrating

    by_bits = collect_weight_aware(graph, weight_enc, [4, 8, 32], data, batch_size=16)
    assert sorted(by_bits) == [4, 8]  # float weights use the FP32 statistics
    fp32 = collect(model, graph.activations, [], data, graph.input_names, batch_size=16).tensors
    relu = "y"
    want = np.maximum(np.einsum("nk,ck->nc", x[:, 0, 0], qw["w"][:, 0, 0]) + b, 0.0).max()
    assert by_bits[4][relu].max == pytest.approx(float(want), rel=1e-6)
    assert abs(by_bits[4][relu].max - fp32[relu].max) > 1e-3  # differs from FP32 here
    assert by_bits[4]["x"].min == fp32["x"].min  # the model input does not depend on the weights
