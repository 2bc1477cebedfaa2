from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from sweeper.quant.calibration import TensorStats
from sweeper.quant.encoding import Encoding, compute_encoding, encoding_from_range
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
    st.update(np.linspace(0, 1, 1000, dtype=np.float32))
    st.update(np.linspace(-5, 5, 1000, dtype=np.float32))
    assert st.min == -5 and st.max == 5 and st.hist is not None and int(st.hist.sum()) == 2000
    assert onnx  # imported for the QuantizeLinear reference above
