"""Dense Einsum layers become MatMul at intake (same outputs), so their weights are quantized and their MACs
counted: a profile's cost then depends on its precisions."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from sweeper.model.rewrite import _matmul_form, einsum_as_matmul


@pytest.mark.parametrize(("equation", "form"), [
    ("bi,ij->bj", False), ("...i,ji->...j", True), ("bsi,ij->bsj", False), ("i,ij->j", False),
    ("bi,jk->bk", None), ("bi,ij->bi", None), ("bij,jk->bik", False), ("bij,jk->bjk", None), ("bi,bj->ij", None), ("ii,ij->ij", None),
])
def test_matmul_forms(equation: str, form: bool | None) -> None:
    assert _matmul_form(equation) is form


def _einsum_model(equation: str, w: np.ndarray) -> onnx.ModelProto:
    nodes = [helper.make_node("Einsum", ["x", "w"], ["y"], equation=equation, name="dense")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 5])],
                              [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(("equation", "shape"), [("bsi,ij->bsj", (4, 5)), ("...i,ji->...j", (5, 4))])
def test_einsum_becomes_matmul_with_the_same_outputs(equation: str, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    model = _einsum_model(equation, rng.standard_normal(shape).astype(np.float32))
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert einsum_as_matmul(model) == 1 and [n.op_type for n in model.graph.node] == ["MatMul"]
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_a_prepared_einsum_model_has_a_weight_quantizer_and_macs() -> None:
    from sweeper.cost.bops import profile_cost
    from sweeper.model.graph import ModelGraph
    from sweeper.model.intake import prepare_model
    from sweeper.quant.profile import Profile

    model = _einsum_model("bsi,ij->bsj", np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32))
    graph = ModelGraph(prepare_model(model))
    assert list(graph.weight_quantizers) == ["w"]
    graph.compute_macs({"y": (2, 3, 5), "x": (2, 3, 4)}, batched=True)
    groups = [g.name for g in graph.groups]
    w8a8, w16a16 = (profile_cost(graph, Profile.uniform(groups, p)).bops for p in ("w8a8", "w16a16"))
    assert 0 < w8a8 < w16a16
