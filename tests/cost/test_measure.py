"""Measured latency: per sample, with its spread, from real ONNX Runtime sessions run in interleaved rounds."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidProtobuf

from sweeper.cost.measure import LatencyStats, measure_interleaved


def _matmul_model(n: int) -> bytes:
    w = numpy_helper.from_array(np.eye(n, dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_stats_are_per_sample() -> None:
    s = LatencyStats.from_times([0.1, 0.2, 0.3, 0.4, 0.5], batch=10, cpu_seconds=[0.05] * 5)
    # run times 100..500 ms over 10 samples: 10..50 ms per sample
    assert (s.min, s.q1, s.median, s.q3, s.max) == pytest.approx((10, 20, 30, 40, 50))
    assert s.cpu_median == pytest.approx(5.0) and s.runs == 5 and s.batch == 10
    assert s.spread_json() == {"q1": s.q1, "q3": s.q3, "min": s.min, "max": s.max, "runs": 5, "batch": 10,
                               "cpu_median": s.cpu_median, "cpu_q1": s.cpu_q1, "cpu_q3": s.cpu_q3}


def test_interleaved_rounds_measure_every_model() -> None:
    feeds = {"x": np.ones((4, 8), np.float32)}
    stats = measure_interleaved({"a": _matmul_model(8), "b": _matmul_model(8)}, feeds, rounds=6, min_rounds=6,
                                budget_s=60.0)
    assert set(stats) == {"a", "b"}
    for s in stats.values():
        assert s.runs == 6 and s.batch == 4
        assert 0 < s.min <= s.q1 <= s.median <= s.q3 <= s.max
        assert math.isfinite(s.cpu_median) and s.cpu_median >= 0


def test_interleaved_stops_at_the_budget_after_min_rounds() -> None:
    stats = measure_interleaved({"a": _matmul_model(8)}, {"x": np.ones((2, 8), np.float32)}, rounds=1000,
                                min_rounds=3, budget_s=0.0)
    assert stats["a"].runs == 3
    assert measure_interleaved({}, {"x": np.ones((2, 8), np.float32)}) == {}
    # a broken model is ONNX Runtime's own error, not a silent skip
    with pytest.raises(InvalidProtobuf, match=r"INVALID_PROTOBUF : Failed to load model because protobuf parsing"):
        measure_interleaved({"bad": b"not a model"}, {"x": np.ones((2, 8), np.float32)})
    onnx.checker.check_model(onnx.load_from_string(_matmul_model(8)))
