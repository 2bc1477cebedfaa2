from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import attention_data, attention_model, cnn_data, cnn_model
from onnx import TensorProto, helper, numpy_helper

from sweeper.cost import CostModel, Target, TargetError, list_targets, load_target
from sweeper.model.graph import WEIGHT_OPS, ModelGraph
from sweeper.model.intake import prepare_model
from sweeper.quant import calibration
from sweeper.quant.precision import Precision
from sweeper.quant.profile import Profile


def _prepared(model: onnx.ModelProto, data: dict[str, np.ndarray]) -> tuple[ModelGraph, dict]:
    """Graph with MACs computed from calibration shapes, as the pipeline does it."""
    prepared = prepare_model(model)
    graph = ModelGraph(prepared)
    extra = [n.output[0] for n in graph.nodes if n.op_type in WEIGHT_OPS]
    extra += [n.input[0] for n in graph.nodes if n.op_type in WEIGHT_OPS]
    stats = calibration.collect(prepared, graph.activations, extra, data, graph.input_names, batch_size=16)
    graph.compute_macs(stats.shapes)
    return graph, stats.shapes


def _uniform(graph: ModelGraph, prec: str) -> Profile:
    return Profile.uniform([g.name for g in graph.groups], prec)


def _wide_conv_model(channels: int = 64) -> onnx.ModelProto:
    """One 3x3 Conv with many channels: compute-bound on the NPU target at 16 bits."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((channels, channels, 3, 3)) * 0.05).astype(np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv")
    graph = helper.make_graph([node], "wide",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", channels, 16, 16])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def cnn() -> tuple[ModelGraph, dict]:
    return _prepared(cnn_model(), cnn_data(16))


def test_bundled_targets_load() -> None:
    assert {"npu_generic", "cpu_x86"} <= set(list_targets())
    npu = load_target("npu_generic")
    tp = npu.throughput_gmacs
    assert tp["int8"] == max(tp[k] for k in ("int8", "int16", "fp16", "fp32")) and tp["fp16"] < tp["int16"]
    cpu = load_target("cpu_x86")
    assert cpu.name == "cpu_x86" and cpu.throughput_gmacs["int8"] > cpu.throughput_gmacs["fp32"]


def test_throughput_keys() -> None:
    npu = load_target("npu_generic")
    key = lambda p: npu.key_for(Precision.parse(p))  # noqa: E731
    assert [key(p) for p in ("w2a8", "w4a4", "w2a2", "w8a8", "w4a8", "w8a16", "w16a16", "fp16", "fp32")] == \
        ["int8", "int4", "int4", "int8", "int8", "int16", "int16", "fp16", "fp32"]
    no_int4 = Target.from_dict({"bandwidth_gbps": 1,
                                "throughput_gmacs": {"int8": 2, "int16": 1, "fp16": 1, "fp32": 1}})
    assert no_int4.key_for(Precision.parse("w2a2")) == "int8"


def test_npu_orders_precisions_on_cnn(cnn: tuple[ModelGraph, dict]) -> None:
    graph, shapes = cnn
    cm = CostModel(graph, shapes, load_target("npu_generic"))
    lat = {p: cm.latency_ms(_uniform(graph, p)) for p in ("w8a8", "w8a16", "w16a16", "fp16", "fp32")}
    assert lat["w8a8"] < lat["w8a16"] < lat["w16a16"] <= lat["fp16"] < lat["fp32"]
    # the tiny CNN is memory-bound on the NPU: w16a16 and fp16 move the same bytes
    assert all(r["bound"] == "memory" for r in cm.per_layer(_uniform(graph, "fp16")))


def test_npu_fp16_slowest_when_compute_bound() -> None:
    x = np.random.default_rng(0).standard_normal((4, 64, 16, 16)).astype(np.float32)
    graph, shapes = _prepared(_wide_conv_model(), {"x": x})
    cm = CostModel(graph, shapes, load_target("npu_generic"))
    lat = {p: cm.latency_ms(_uniform(graph, p)) for p in ("w8a8", "w8a16", "w16a16", "fp16")}
    assert lat["w8a8"] < lat["w8a16"] <= lat["w16a16"] < lat["fp16"]
    assert cm.per_layer(_uniform(graph, "fp16"))[0]["bound"] == "compute"


def test_cpu_fp32_slower_than_int8(cnn: tuple[ModelGraph, dict]) -> None:
    graph, shapes = cnn
    cm = CostModel(graph, shapes, load_target("cpu_x86"))
    assert cm.latency_ms(_uniform(graph, "fp32")) > cm.latency_ms(_uniform(graph, "w8a8"))
    # groups missing from a profile run at FP32
    assert cm.latency_ms(Profile.make({})) == cm.latency_ms(_uniform(graph, "fp32"))


def test_per_layer_sums_to_latency(cnn: tuple[ModelGraph, dict]) -> None:
    graph, shapes = cnn
    target = load_target("cpu_x86")
    cm = CostModel(graph, shapes, target, batch=4)
    prof = Profile.make({"conv1": "w8a8", "conv2": "fp16", "fc": "w4a16"})
    rows = cm.per_layer(prof)
    assert [r["group"] for r in rows] == [g.name for g in graph.groups]
    assert sum(r["ms"] for r in rows) == pytest.approx(cm.latency_ms(prof), rel=1e-12)
    for r in rows:
        assert r["ms"] == pytest.approx(max(r["compute_ms"], r["memory_ms"]) + target.overhead_us_per_layer / 1e3)
    conv1 = rows[0]
    assert conv1["macs"] == 4 * 2304 and conv1["weight_bytes"] == 36  # 4x1x3x3 weights at 8 bits
    # x (1x8x8) read + c1 (4x8x8) written, 8 bits, 4 samples
    assert conv1["activation_bytes"] == 4 * (64 + 256)
    assert rows[1]["throughput_key"] == "fp16" and rows[2]["throughput_key"] == "int16"


def test_zero_mac_groups_cost_memory() -> None:
    graph, shapes = _prepared(attention_model(), attention_data(8))
    cm = CostModel(graph, shapes, load_target("npu_generic"))
    rows = {r["group"]: r for r in cm.per_layer(_uniform(graph, "w8a8"))}
    assert rows["softmax"]["macs"] == 0 and rows["softmax"]["memory_ms"] > 0 and rows["softmax"]["ms"] > 0
    assert not cm.missing_shapes


def test_mixed_between_uniform(cnn: tuple[ModelGraph, dict]) -> None:
    graph, shapes = cnn
    for name in list_targets():
        cm = CostModel(graph, shapes, load_target(name))
        lo, hi = cm.latency_ms(_uniform(graph, "w8a8")), cm.latency_ms(_uniform(graph, "w16a16"))
        mixed = cm.latency_ms(Profile.make({"conv1": "w8a8", "conv2": "w16a16", "fc": "w8a8"}))
        assert lo < mixed < hi, name


def test_custom_yaml_target(tmp_path: Path, cnn: tuple[ModelGraph, dict]) -> None:
    path = tmp_path / "mychip.yaml"
    path.write_text("description: test chip\nbandwidth_gbps: 1\noverhead_us_per_layer: 10\n"
                    "throughput_gmacs: {int8: 1, int16: 0.5, fp16: 0.25, fp32: 0.125}\n")
    target = load_target(path)
    assert target.name == "mychip" and target.overhead_us_per_layer == 10 and "int4" not in target.throughput_gmacs
    assert load_target(str(path)) == target
    graph, shapes = cnn
    cm = CostModel(graph, shapes, target)
    # 1 GMAC/s, 1 GB/s: conv1 at w8a8 is 2304 MACs (2.304 us) vs 9 + 320 bytes (0.329 us) -> compute-bound
    row = cm.per_layer(_uniform(graph, "w8a8"))[0]
    assert row["compute_ms"] == pytest.approx(2.304e-3) and row["ms"] == pytest.approx(2.304e-3 + 10e-3)


@pytest.mark.parametrize(("text", "field"), [
    ("throughput_gmacs: {int8: 1, int16: 1, fp16: 1, fp32: 1}\n", "bandwidth_gbps"),
    ("bandwidth_gbps: -5\nthroughput_gmacs: {int8: 1, int16: 1, fp16: 1, fp32: 1}\n", "bandwidth_gbps"),
    ("bandwidth_gbps: 5\nthroughput_gmacs: {int8: 0, int16: 1, fp16: 1, fp32: 1}\n", "throughput_gmacs.int8"),
    ("bandwidth_gbps: 5\nthroughput_gmacs: {int8: 1, int16: 1, fp32: 1}\n", "throughput_gmacs.fp16"),
    ("bandwidth_gbps: 5\nthroughput_gmacs: {int8: 1, int16: 1, fp16: 1, fp32: 1, int3: 1}\n", "throughput_gmacs.int3"),
    ("bandwidth_gbps: fast\nthroughput_gmacs: {int8: 1, int16: 1, fp16: 1, fp32: 1}\n", "bandwidth_gbps"),
    ("bandwidth_gbps: 5\nthroughput_gmacs: 7\n", "throughput_gmacs"),
    ("bandwith_gbps: 5\nthroughput_gmacs: {int8: 1, int16: 1, fp16: 1, fp32: 1}\n", "bandwith_gbps"),
    ("bandwidth_gbps: 5\noverhead_us_per_layer: -1\nthroughput_gmacs: {int8: 1, int16: 1, fp16: 1, fp32: 1}\n",
     "overhead_us_per_layer"),
    ("bandwidth_gbps: [5\n", "not valid YAML"),
])
def test_bad_target_names_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        load_target(path)
    assert isinstance(err.value, TargetError)
    assert str(path) in str(err.value) and field in str(err.value)


def test_unknown_target_lists_bundled() -> None:
    with pytest.raises(ValueError, match="npu_generic"):
        load_target("no_such_target")


def test_requires_macs() -> None:
    graph = ModelGraph(prepare_model(cnn_model()))
    with pytest.raises(ValueError, match="compute_macs"):
        CostModel(graph, {}, load_target("npu_generic"))


def test_latency_is_cheap(cnn: tuple[ModelGraph, dict]) -> None:
    graph, shapes = cnn
    cm = CostModel(graph, shapes, load_target("npu_generic"))
    prof = _uniform(graph, "w8a16")
    first = cm.latency_ms(prof)
    t0 = time.perf_counter()
    for _ in range(1000):
        assert cm.latency_ms(prof) == first
    assert (time.perf_counter() - t0) / 1000 < 1e-4  # well under 100 us per cached call (about 1 us)
