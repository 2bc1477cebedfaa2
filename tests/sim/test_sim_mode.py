"""The simulation's session mode (``sweeper.sim.quantsim.sim_mode``): LAYOUT (ONNX Runtime's NCHWc kernels in
the simulation and in the export's reference session) only where that keeps sim = export bit for bit, at every
precision including activations left float (fp32), where ONNX Runtime may fuse what reads a Conv.

Tiny onnx.helper CNNs, 16 channels (a multiple of the NCHWc block, so the layout transformer does apply)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sweeper.export import export_qdq
from sweeper.model.graph import ModelGraph
from sweeper.model.intake import prepare_model
from sweeper.model.session import LAYOUT, PLAIN, reference_mode, reference_session
from sweeper.quant import calibration
from sweeper.quant.profile import Profile
from sweeper.sim.encodings import EncodingTable, QuantConfig
from sweeper.sim.quantsim import QuantSim, sim_mode

PRECS = ["fp32", "w8a8", "w8a16", "fp16", "w4a8"]
C = 16


def _model(tail: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Conv -> Conv -> <tail> -> Flatten -> Gemm (K = 576, where ONNX Runtime's Gemm over a constant B adds
    in another order than over a run-time one); ``tail`` is what reads the second Conv's output."""
    rng = np.random.default_rng(3)

    def w(name: str, shape: tuple[int, ...], s: float = 0.2) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * s).astype(np.float32), name)

    inits = [w("w1", (C, 3, 3, 3)), w("b1", (C,), 0.1), w("w2", (C, C, 3, 3)), w("b2", (C,), 0.1),
             w("w3", (10, C * 36)), w("b3", (10,), 0.1),]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1])]
    if tail == "residual":  # the Conv's only reader is an Add of two activations: NCHWc fuses it as "Sum"
        nodes.append(helper.make_node("Add", ["c2", "c1"], ["t"]))
    elif tail == "gap":  # a blocked-layout GlobalAveragePool sums in another order
        nodes += [helper.make_node("GlobalAveragePool", ["c2"], ["g"]),
                  helper.make_node("Expand", ["g", "shape"], ["t"])]
        inits.append(numpy_helper.from_array(np.array([1, C, 6, 6], np.int64), "shape"))
    else:  # an activation the NCHWc transformer leaves alone, or a second Conv's input: the same bits
        nodes.append(helper.make_node(tail, ["c2"], ["t"]))
    nodes += [helper.make_node("Flatten", ["t"], ["f"]), helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    return model, {"x": np.random.default_rng(4).standard_normal((32, 3, 6, 6)).astype(np.float32)}


@pytest.mark.parametrize(("tail", "mode"), [("HardSigmoid", LAYOUT), ("Relu", LAYOUT), ("LeakyRelu", LAYOUT),
                                            ("residual", PLAIN), ("gap", PLAIN)])
def test_mode_and_sim_equals_export_at_every_precision(tail: str, mode: str) -> None:
    model, data = _model(tail)
    prepared = prepare_model(model)
    graph = ModelGraph(prepared)
    stats = calibration.collect(prepared, graph.activations, [], data, graph.input_names, batch_size=16)
    table = EncodingTable(graph, stats, QuantConfig())
    sim = QuantSim(graph, table, threads=1, precisions=PRECS)
    assert sim_mode(graph) == sim.mode == mode
    groups = [g.name for g in graph.groups]
    profiles = [Profile.uniform(groups, p) for p in PRECS]
    profiles += [Profile.make({g: ("fp32" if k == j else "w8a8") for k, g in enumerate(groups)})
                 for j in range(len(groups))]  # one group left float: what reads its Conv sees no Q/DQ
    for profile in profiles:
        exported = export_qdq(graph, table, profile)
        assert reference_mode(exported) == mode
        sim.apply(profile)
        for a, b in zip(sim.run(data), reference_session(exported).run(None, data), strict=True):
            np.testing.assert_array_equal(a, b)
