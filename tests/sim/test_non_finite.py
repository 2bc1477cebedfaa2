"""Non-finite values never reach an encoding: found while preparing, with one line naming the tensor, or
handled where a deployment would handle them (an int32 bias whose nominal scale underflows)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import write_experiment
from onnx import TensorProto, helper, numpy_helper

from sweeper.config.experiment import load_experiment
from sweeper.errors import SweeperError
from sweeper.export.encodings_io import non_finite_values
from sweeper.pipeline import Workspace
from sweeper.quant.profile import Profile


def _gemm(w: np.ndarray, b: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1, name="fc")], "fc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(w.astype(np.float32), "w"), numpy_helper.from_array(b.astype(np.float32), "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_non_finite_values_are_named_where_they_are() -> None:
    doc = {"activation_encodings": [{"name": "x", "scale": [0.1]}, {"name": "y", "scale": [float("inf")]}],
           "sweeper": {"bias": [{"max_scale_factor": float("nan")}]}, "ok": 1.0}
    assert non_finite_values(doc) == ["activation_encodings[1] ('y').scale[0] = inf",
                                      "sweeper.bias[0].max_scale_factor = nan"]


def test_an_underflowing_bias_scale_keeps_the_encodings_finite(tmp_path: Path) -> None:
    """A 16-bit input of subnormal range times an 8-bit weight scale underflows to a subnormal (or 0) int32 bias scale:
    the bias is rescaled (as deployments do) and its report stays finite, so the encodings file is valid JSON."""
    rng = np.random.default_rng(0)
    model = _gemm(rng.standard_normal((3, 4)) * 0.3, np.array([0.5, -0.2, 0.1]))
    x = (rng.random((16, 4)) * 1e-39).astype(np.float32)  # subnormal float32 values
    ws = Workspace(load_experiment(write_experiment(tmp_path, model, {"x": x}, candidates="[w8a16, w8a8]")))
    try:
        doc = ws.table.to_aimet(Profile.uniform([g.name for g in ws.graph.groups], "w8a16"))
        assert non_finite_values(doc) == []
        json.dumps(doc, allow_nan=False)
        (rescaled,) = doc["sweeper"]["bias_rescaled"]  # the underflowed channels, reported
        assert rescaled["bias"] == "b" and rescaled["channels_rescaled"] == 3
        assert np.isfinite(rescaled["max_scale_factor"])
        assert ws.table.bias_encoding("b", Profile.uniform([g.name for g in ws.graph.groups], "w8a16")
                                      ).nominal_scale.max() < np.finfo(np.float32).tiny  # it did underflow
    finally:
        ws.close()


def test_a_model_whose_encodings_cannot_be_finite_fails_while_preparing(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4)) * 0.3
    w[1, 2] = np.inf
    model = _gemm(w, np.zeros(3))
    x = rng.standard_normal((16, 4)).astype(np.float32)
    with pytest.raises(SweeperError, match=r"at w8a16: encoding param_encodings\[0\] \('w'\)\.scale\[1\] = inf"):
        Workspace(load_experiment(write_experiment(tmp_path, model, {"x": x}, candidates="[w8a16, w8a8]")))


def test_a_subnormal_range_gets_a_normal_positive_scale() -> None:
    from sweeper.quant.encoding import MIN_SCALE, encoding_from_range

    for sym in (False, True):
        for bits in (8, 16):
            enc = encoding_from_range(np.array([-3e-41]), np.array([2e-40]), bits, sym)
            assert enc.scale[0] == np.float32(MIN_SCALE) and np.isfinite(enc.scale).all()
            assert enc.fake_quantize(np.array([1e-40, 0.0], np.float32)).tolist() == [0.0, 0.0]
            empty = encoding_from_range(np.array([0.0]), np.array([0.0]), bits, sym)
            assert empty.scale[0] == np.float32(1e-8)
