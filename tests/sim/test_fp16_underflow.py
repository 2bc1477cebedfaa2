"""float16 underflow is reported per tensor, as saturation is: values that float16 turns into zero where the
tensor feeds a Log or a divisor (an audio front end's power spectrum before its Log, a norm before a Div)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from conftest import write_experiment
from onnx import TensorProto, helper, numpy_helper

from sweeper.config.experiment import load_experiment
from sweeper.pipeline import Workspace
from sweeper.quant.fp16 import flushed_to_zero
from sweeper.quant.profile import Profile


def _log_power_model() -> onnx.ModelProto:
    """x -> Gemm -> Mul (tiny gain: a power spectrum of quiet audio) -> Abs -> Log; and x / (Gemm output)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((4, 4)) * 0.3).astype(np.float32), "w"),
             numpy_helper.from_array(np.array(1e-9, np.float32), "gain")]
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"], transB=1, name="fc"),
             helper.make_node("Mul", ["h", "gain"], ["power"], name="gain_mul"),
             helper.make_node("Abs", ["power"], ["mag"], name="abs"),
             helper.make_node("Log", ["mag"], ["logmag"], name="log"),
             helper.make_node("Add", ["logmag", "h"], ["y"], name="mix")]
    graph = helper.make_graph(nodes, "logpower", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_flushed_to_zero_counts_what_float16_zeroes() -> None:
    x = np.array([0.0, 1e-9, -2e-8, 2.0**-25, 6e-8, 1.0], np.float32)
    assert flushed_to_zero(x) == 3  # 1e-9, -2e-8 and 2**-25 (half the smallest subnormal, rounded to even)
    assert [float(v) for v in x.astype(np.float16)[:4]] == [0.0, 0.0, 0.0, 0.0] and x.astype(np.float16)[4] != 0


def test_underflow_before_a_log_is_reported_under_fp16_only(tmp_path: Path) -> None:
    x = np.random.default_rng(1).standard_normal((32, 4)).astype(np.float32)
    exp = load_experiment(write_experiment(tmp_path, _log_power_model(), {"x": x}, candidates="[w8a16, fp16]"))
    ws = Workspace(exp)
    try:
        groups = [g.name for g in ws.graph.groups]
        fp16 = ws.table.adjustments(Profile.uniform(groups, "fp16"))["fp16_underflow"]
        assert [(e["tensor"], e["read_by"]) for e in fp16] == [("mag", ["Log log"])]
        assert fp16[0]["values_flushed"] > 0.9 * 32 * 4  # nearly every value of the quiet power is below 3e-8
        assert ws.table.adjustments(Profile.uniform(groups, "w8a16"))["fp16_underflow"] == []
    finally:
        ws.close()
