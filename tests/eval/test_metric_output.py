"""``metric_output``: built-in metrics read the named output; only it is kept as the FP32 reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import write_experiment
from onnx import TensorProto, helper, numpy_helper

from sweeper.config.experiment import load_experiment
from sweeper.errors import SweeperError
from sweeper.pipeline import Workspace


def two_outputs() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.random.default_rng(0).normal(0, 0.3, (8, 4)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["logits"], name="mm"),
             helper.make_node("Relu", ["logits"], ["features"], name="relu")]
    graph = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 4]),
                               helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_metric_reads_the_named_output_and_keeps_only_its_reference(tmp_path: Path) -> None:
    x = np.random.default_rng(1).normal(0, 1, (32, 8)).astype(np.float32)
    ws = Workspace(load_experiment(write_experiment(tmp_path, two_outputs(), {"x": x}, extra="metric_output: logits\n")))
    try:
        assert ws.evaluator.output_index == 1
        assert len(ws.reference) == 1
        np.testing.assert_allclose(ws.reference[0], x @ numpy_helper.to_array(ws.graph.initializers["w"]), rtol=1e-5)
    finally:
        ws.close()


def test_an_unknown_metric_output_is_one_line(tmp_path: Path) -> None:
    x = np.zeros((4, 8), np.float32)
    exp = load_experiment(write_experiment(tmp_path, two_outputs(), {"x": x}, extra="metric_output: probs\n"))
    with pytest.raises(SweeperError, match=r"metric_output: the model has no output 'probs': its outputs are "
                                           r"features, logits"):
        Workspace(exp)
