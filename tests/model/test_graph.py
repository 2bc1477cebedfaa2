from __future__ import annotations

from conftest import attention_model, cnn_model

from sweeper.model.graph import ModelGraph
from sweeper.model.intake import prepare_model


def test_cnn_placement_follows_aimet_defaults() -> None:
    g = ModelGraph(prepare_model(cnn_model()))
    # input quantized; Conv fused with Relu (no quantizer on c1); MaxPool/Flatten have none;
    # Add+Relu fused (no quantizer on s2); conv2 output c2 feeds the Add: quantized
    assert g.activations == ["x", "r1", "c2", "r2", "y"]
    assert set(g.weight_quantizers) == {"w1", "w2", "w3"}
    assert g.weight_quantizers["w3"].axis == 0 and g.weight_quantizers["w1"].bias == "b1"
    # the fake-quant of r1 is applied after the MaxPool in the simulation (exact, cheaper)
    assert g.sim_location["r1"] == "p1"


def test_groups_merge_shared_inputs() -> None:
    g = ModelGraph(prepare_model(cnn_model()))
    by = g.group_of()
    # p1 (= r1 quantized) feeds both conv2 and the residual Add: one group
    assert by["r1"] == by["w2"]
    names = {gr.name for gr in g.groups}
    assert by["w1"] == by["x"] and by["w3"] == by["r2"] == by["y"]
    # conv1 | conv2 + the Add (which reads both c2 and r1) | fc (+ the model output)
    assert by["c2"] == by["r1"]
    assert len(names) == 3


def test_attention_placement() -> None:
    g = ModelGraph(prepare_model(attention_model()))
    # MatMul+Add (linear layer) fused: q0 not quantized; the Transpose gets no quantizer
    assert "q0" not in g.activations and "kt" not in g.activations
    assert {"x", "q", "k", "s", "sm", "p", "y", "madd"} <= set(g.activations)
    assert set(g.weight_quantizers) == {"wq", "wk"}
    # MatMul between two activations groups both of its input quantizers
    by = g.group_of()
    assert by["q"] == by["k"]


def test_onnx_with_external_data_loads_and_prepares(tmp_path) -> None:  # noqa: ANN001
    import onnx
    from conftest import cnn_model

    from sweeper.model.intake import load_onnx_file

    path = tmp_path / "ext.onnx"
    onnx.save(cnn_model(), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.data", size_threshold=0)
    assert (tmp_path / "ext.data").is_file()
    model = load_onnx_file(path)
    g = ModelGraph(prepare_model(model))
    assert set(g.weight_quantizers) == {"w1", "w2", "w3"}
    assert g.weight_array("w1").shape == (4, 1, 3, 3)
