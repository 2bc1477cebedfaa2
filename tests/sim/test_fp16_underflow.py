"""Zeros that break a model (sweeper.quant.keep_float): a strictly positive tensor read by a Log or as a divisor is
kept float at every precision (a grid holds 0: its smallest values would become exactly 0); float16 underflow
of a tensor that a zero breaks is reported per tensor, as saturation is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from conftest import write_experiment
from onnx import TensorProto, helper, numpy_helper

from sweeper.config.experiment import load_experiment
from sweeper.export.qdq import export_qdq
from sweeper.model.session import reference_session
from sweeper.pipeline import Workspace
from sweeper.quant.fp16 import flushed_to_zero
from sweeper.quant.profile import Profile
from sweeper.sim.quantsim import QuantSim


def _log_power_model() -> onnx.ModelProto:
    """x -> Gemm -> h; Mul (tiny gain: the power of quiet audio) -> Abs -> + eps -> Log (a log spectrum);
    and y = Log(...) + x / (h * gain) (a divisor of both signs, some tiny)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((4, 4)) * 0.3).astype(np.float32), "w"),
             numpy_helper.from_array(np.array(1e-9, np.float32), "gain"),
             numpy_helper.from_array(np.array(1e-12, np.float32), "eps")]
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"], transB=1, name="fc"),
             helper.make_node("Mul", ["h", "gain"], ["power"], name="gain_mul"),
             helper.make_node("Abs", ["power"], ["mag"], name="abs"),
             helper.make_node("Add", ["mag", "eps"], ["mag_eps"], name="add_eps"),
             helper.make_node("Log", ["mag_eps"], ["logmag"], name="log"),
             helper.make_node("Div", ["x", "power"], ["ratio"], name="ratio"),
             helper.make_node("Add", ["logmag", "ratio"], ["y"], name="mix")]
    graph = helper.make_graph(nodes, "logpower", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_flushed_to_zero_counts_what_float16_zeroes() -> None:
    x = np.array([0.0, 1e-9, -2e-8, 2.0**-25, 6e-8, 1.0], np.float32)
    assert flushed_to_zero(x) == 3  # 1e-9, -2e-8 and 2**-25 (half the smallest subnormal, rounded to even)
    assert [float(v) for v in x.astype(np.float16)[:4]] == [0.0, 0.0, 0.0, 0.0] and x.astype(np.float16)[4] != 0


def test_a_positive_log_input_stays_float_and_a_flushed_divisor_is_reported(tmp_path: Path) -> None:
    x = np.random.default_rng(1).standard_normal((256, 4)).astype(np.float32)  # some |h| near 0
    exp = load_experiment(write_experiment(tmp_path, _log_power_model(), {"x": x}, candidates="[w8a8, w16a16, fp16]"))
    ws = Workspace(exp)
    try:
        groups = [g.name for g in ws.graph.groups]
        # positive and read by the Log, and the positive Abs feeding it (a chain); power has both signs
        assert set(ws.table.never_zero) == {"mag_eps", "mag"}
        assert [e["tensor"] for e in ws.model_report()["left_float"] if "read_by" in e] == ["mag", "mag_eps"]
        sim = QuantSim(ws.graph, ws.table, threads=1, precisions=exp.candidates, extra_outputs=["logmag"])
        for prec in ("w8a8", "w16a16", "fp16"):
            profile = Profile.uniform(groups, prec)
            assert ws.table.act_encoding("mag_eps", profile[ws.table.group_of["mag_eps"]]) is None
            sim.apply(profile)
            assert np.isfinite(sim.run({"x": x})[1]).all()  # the Log never sees a 0 (its raw output)
            path = tmp_path / f"{prec}.onnx"
            onnx.save(export_qdq(ws.graph, ws.table, profile), str(path))
            exported = reference_session(str(path), 1).run(None, {"x": x})[0]
            assert np.array_equal(exported, sim.run({"x": x})[0], equal_nan=True)  # sim = export
            if prec != "fp16":
                continue
            (under,) = ws.table.adjustments(profile)["fp16_underflow"]  # the flushed divisor, not the Log input
            assert under["tensor"] == "power" and under["read_by"] == ["Div ratio"]
            assert under["values_flushed"] > 0.9 * 256 * 4
        assert ws.table.adjustments(Profile.uniform(groups, "w16a16"))["fp16_underflow"] == []
    finally:
        ws.close()


def test_positive_chains_stop_at_the_first_tensor_that_is_not_positive() -> None:
    from onnx import helper as h

    from sweeper.quant.keep_float import positive_chains

    nodes = {"pw": h.make_node("Pow", ["conv", "two"], ["pw"]), "s": h.make_node("ReduceSum", ["pw", "ax"], ["s"]),
             "sq": h.make_node("Sqrt", ["s"], ["sq"]), "e": h.make_node("Add", ["sq", "eps"], ["e"]),
             "conv": h.make_node("Conv", ["x", "w"], ["conv"])}
    positive = {"pw", "s", "sq", "e", "eps"}.__contains__  # conv is signed; eps is a constant, not an activation
    keep = positive_chains({"e": ["Log log"]}, lambda t: positive(t) and t != "eps", nodes)
    assert set(keep) == {"e", "sq", "s", "pw"} and keep["pw"] == ["Log log"]
    assert positive_chains({"e": ["Log log"]}, lambda t: t == "e", nodes) == {"e": ["Log log"]}
