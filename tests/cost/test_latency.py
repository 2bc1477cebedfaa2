from __future__ import annotations

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
    assert cpu.name == "cpu_x86" and cpu.kind == "qdq_runtime" and cpu.qdq is not None
    # ORT CPU: fused int8 kernels beat float32; float kernels on dequantized weights do not
    for mac in (cpu.qdq.ns_per_conv_mac, cpu.qdq.ns_per_matmul_mac):
        assert mac["int8"] < mac["fp32"]


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
    """On a compute-heavy layer (as the examples' layers are) fused w8a8 beats FP32 on ORT CPU."""
    x = np.random.default_rng(0).standard_normal((4, 64, 16, 16)).astype(np.float32)
    wide, wide_shapes = _prepared(_wide_conv_model(), {"x": x})
    cm = CostModel(wide, wide_shapes, load_target("cpu_x86"))
    assert cm.latency_ms(_uniform(wide, "fp32")) > cm.latency_ms(_uniform(wide, "w8a8"))
    # groups missing from a profile run at FP32
    graph, shapes = cnn
    cm = CostModel(graph, shapes, load_target("cpu_x86"))
    assert cm.latency_ms(Profile.make({})) == cm.latency_ms(_uniform(graph, "fp32"))


def test_per_layer_sums_to_latency(cnn: tuple[ModelGraph, dict]) -> None:
    graph, shapes = cnn
    target = load_target("npu_generic")
    cm = CostModel(graph, shapes, target, batch=4)
    prof = Profile.make({"conv1": "w8a8", "conv2": "fp16", "fc": "w4a16"})
    rows = cm.per_layer(prof)
    assert [r["group"] for r in rows] == [g.name for g in graph.groups]
    assert sum(r["ms"] for r in rows) == pytest.approx(cm.latency_ms(prof), rel=1e-12)
    for r in rows:  # per sample: the per-run overhead is spread over the batch of 4
        assert r["ms"] == pytest.approx(max(r["compute_ms"], r["memory_ms"]) + target.overhead_us_per_layer / 1e3 / 4)
    conv1 = rows[0]
    assert conv1["macs"] == 2304 and conv1["weight_bytes"] == 36  # per sample; 4x1x3x3 weights at 8 bits
    # x (1x8x8) read + c1 (4x8x8) written, 8 bits, one sample
    assert conv1["activation_bytes"] == 64 + 256
    # weights are read once per run of 4 samples
    assert conv1["memory_ms"] == pytest.approx((36 / 4 + 320) / (target.bandwidth_gbps * 1e9) * 1e3)
    assert rows[1]["throughput_key"] == "fp16" and rows[2]["throughput_key"] == "int16"


def test_estimate_is_per_sample(cnn: tuple[ModelGraph, dict]) -> None:
    """The unit is one sample: compute and activation traffic do not grow with the batch, per-run costs
    shrink with it; the default batch is the one the shapes were observed at (the evaluation batch)."""
    graph, shapes = cnn
    target = load_target("npu_generic")
    default = CostModel(graph, shapes, target)
    assert default.batch == 16  # the fixture's calibration batch
    one, many = CostModel(graph, shapes, target, batch=1), CostModel(graph, shapes, target, batch=64)
    prof = _uniform(graph, "w8a16")
    for r1, r64 in zip(one.per_layer(prof), many.per_layer(prof), strict=True):
        assert r1["compute_ms"] == r64["compute_ms"] and r1["macs"] == r64["macs"]
        assert r64["memory_ms"] < r1["memory_ms"]
    assert many.latency_ms(prof) < one.latency_ms(prof)


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
    row = cm.per_layer(_uniform(graph, "w8a8"))[0]  # per sample: 10 us per run over the batch of 16
    assert row["compute_ms"] == pytest.approx(2.304e-3) and row["ms"] == pytest.approx(2.304e-3 + 10e-3 / 16)


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


def test_latency_estimates_are_cached(cnn: tuple[ModelGraph, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    """What makes an estimate cheap enough to call for every AMP trial (about 1 us a call): a profile seen before is answered from the whole-profile cache without looking at
    its groups, a new profile computes only the group terms no profile needed before, and the profile cache is
    a bounded LRU."""
    graph, shapes = cnn
    cm = CostModel(graph, shapes, load_target("npu_generic"))
    computed: list[tuple[str, str]] = []  # (group, precision) of every group term computed
    looked_at: list[Profile] = []  # profiles whose groups were read
    terms, precisions = cm._roofline_terms, cm._precisions  # noqa: SLF001 - counting the work behind the caches
    monkeypatch.setattr(cm, "_roofline_terms", lambda b, prec: computed.append((b.name, prec.name)) or terms(b, prec))
    monkeypatch.setattr(cm, "_precisions", lambda prof: looked_at.append(prof) or precisions(prof))
    names = [g.name for g in graph.groups]
    prof = _uniform(graph, "w8a16")
    first = cm.latency_ms(prof)
    assert sorted(computed) == sorted((n, "w8a16") for n in names) and looked_at == [prof]
    for _ in range(100):
        assert cm.latency_ms(prof) == first
    assert cm.latency_ms(_uniform(graph, "w8a16")) == first  # an equal profile built afresh: the same entry
    assert len(computed) == len(names) and len(looked_at) == 1  # answered from the cache, nothing recomputed
    one_flipped = prof.with_groups({names[0]: Precision.parse("w8a8")})
    assert cm.latency_ms(one_flipped) < first
    assert computed[len(names):] == [(names[0], "w8a8")]  # the other groups' terms came from the term cache
    monkeypatch.setattr(cm, "PROFILE_CACHE", 2)
    cm.latency_ms(_uniform(graph, "w8a8"))  # a third profile evicts the least recently used (prof)
    assert cm.latency_ms(prof) == first and looked_at[-1] == prof and len(looked_at) == 4
    assert len(computed) == len(names) + 1 + (len(names) - 1)  # w8a8 everywhere: only the new group terms


# -- the qdq_runtime target kind (cpu_x86: ONNX Runtime CPU running exported QDQ models) -------------------
def _qdq_target(**changes: dict[str, float]) -> Target:
    """A qdq_runtime target with distinct, easy coefficients (ns per unit)."""
    section = {"ns_per_conv_mac": {"fp32": 1.0, "fp16": 1.5, "int8": 0.5, "qdq": 2.0},
               "ns_per_matmul_mac": {"fp32": 1.0, "fp16": 1.5, "int8": 0.5, "qdq": 2.0},
               "ns_per_activation": {"fp32": 0.0, "fp16": 3.0, "int8": 0.25, "a4": 5.0, "a8": 4.0, "a16": 6.0},
               "ns_per_pool_element": {"fp32": 0.0, "fp16": 0.0, "int8": 0.0, "a4": 0.0, "a8": 0.0, "a16": 0.0},
               "ns_per_weight_dequant": {"int4": 40.0, "int8": 20.0, "int16": 30.0}}
    for key, value in changes.items():
        section[key] = {**section[key], **value}
    return Target.from_dict({"name": "qdq_test", "overhead_us_per_layer": 0.0, "qdq_runtime": section})


def _mlp_model() -> onnx.ModelProto:
    """MatMul -> Relu -> MatMul: a MatMul can hand a float output to an unquantized reader and stay fused."""
    rng = np.random.default_rng(1)
    w1 = numpy_helper.from_array((rng.standard_normal((16, 32)) * 0.1).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((32, 8)) * 0.1).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], [w1, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _modes(cm: CostModel, prof: Profile) -> dict[str, str]:
    return {r["group"]: r["mode"] for r in cm.per_layer(prof)}


def test_qdq_modes_follow_the_neighbours(cnn: tuple[ModelGraph, dict]) -> None:
    """w8a8 runs fused integer kernels only when the quantizers reading its outputs are 8-bit integers too;
    a Conv whose output is read unquantized (an FP32 neighbour) cannot fuse; everything else quantized is
    a float kernel on dequantized tensors."""
    graph, shapes = cnn
    cm = CostModel(graph, shapes, _qdq_target())
    assert _modes(cm, _uniform(graph, "w8a8")) == {"conv1": "int8", "conv2": "int8", "fc": "int8"}
    assert _modes(cm, _uniform(graph, "w4a8")) == {"conv1": "qdq", "conv2": "qdq", "fc": "qdq"}
    assert _modes(cm, _uniform(graph, "fp16")) == {"conv1": "fp16", "conv2": "fp16", "fc": "fp16"}
    # conv2 reads conv1's output at 16 bits: conv1 cannot produce it from a fused kernel
    mixed = Profile.make({"conv1": "w8a8", "conv2": "w8a16", "fc": "w8a8"})
    assert _modes(cm, mixed) == {"conv1": "qdq", "conv2": "qdq", "fc": "int8"}
    # a w4a8 reader still quantizes to 8 bits: conv1 stays fused
    assert _modes(cm, Profile.make({"conv1": "w8a8", "conv2": "w4a8", "fc": "w8a8"}))["conv1"] == "int8"
    assert _modes(cm, Profile.make({"conv1": "w8a8", "conv2": "fp32", "fc": "w8a8"}))["conv1"] == "qdq"
    # unfused conv1 costs its weight dequantization (per run, over the batch) and activation Q/DQ
    row = cm.per_layer(mixed)[0]
    assert row["activation_class"] == "a8" and row["weight_dequant"] == "int8"
    assert row["weight_dequant_ms"] == pytest.approx(36 * 20.0 * 1e-6 / cm.batch)
    assert row["activation_ms"] == pytest.approx((64 + 256) * 4.0 * 1e-6)
    assert row["mac_ms"] == pytest.approx(2304 * 2.0 * 1e-6)


def test_qdq_matmul_fuses_with_a_float_reader() -> None:
    x = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
    graph, shapes = _prepared(_mlp_model(), {"x": x})
    names = [g.name for g in graph.groups]
    assert names == ["mm1", "relu", "mm2"]  # the Relu reads mm1's output through its own quantizer
    cm = CostModel(graph, shapes, _qdq_target())
    assert _modes(cm, Profile.make({"mm1": "w8a8", "relu": "fp32", "mm2": "fp32"})) == \
        {"mm1": "int8", "relu": "fp32", "mm2": "fp32"}
    assert _modes(cm, Profile.make({"mm1": "w8a8", "relu": "w8a16", "mm2": "w8a8"}))["mm1"] == "qdq"
    # no integer kernel for a Relu on its own: it runs as Q/DQ around a float op
    assert _modes(cm, _uniform(graph, "w8a8")) == {"mm1": "int8", "relu": "qdq", "mm2": "int8"}


def test_qdq_latency_matches_features(cnn: tuple[ModelGraph, dict]) -> None:
    """The fitting features times the coefficients give the estimate (what bench/latency_fit.py relies on)."""
    graph, shapes = cnn
    target = load_target("cpu_x86")
    cm = CostModel(graph, shapes, target)
    q = target.qdq
    assert q is not None
    coef = {f"conv:{k}": v for k, v in q.ns_per_conv_mac.items()} | {f"matmul:{k}": v for k, v in q.ns_per_matmul_mac.items()}
    coef |= {f"act:{k}": v for k, v in q.ns_per_activation.items()}
    coef |= {f"pool:{k}": v for k, v in q.ns_per_pool_element.items()}
    coef |= {f"wdq:{k}": v for k, v in q.ns_per_weight_dequant.items()} | {"layers": target.overhead_us_per_layer * 1e3}
    for prof in (_uniform(graph, "w8a8"), _uniform(graph, "w4a4"), _uniform(graph, "fp16"), Profile.make({}),
                 Profile.make({"conv1": "w8a8", "conv2": "w8a16", "fc": "w2a8"})):
        feats = cm.features(prof)
        assert sum(coef[k] * v for k, v in feats.items()) * 1e-6 == pytest.approx(cm.latency_ms(prof), rel=1e-9)


def test_cpu_x86_orders_like_onnxruntime(cnn: tuple[ModelGraph, dict]) -> None:
    """Measured on ORT CPU (bench/latency_fit.py): w8a8 is faster than FP32; 4-bit weights, 16-bit
    activations and fp16 are slower (no kernels for them: dequantize + float kernel, Cast round trips).
    A compute-heavy layer, as in the examples (the fit is made on them)."""
    x = np.random.default_rng(0).standard_normal((4, 64, 16, 16)).astype(np.float32)
    graph, shapes = _prepared(_wide_conv_model(), {"x": x})
    cm = CostModel(graph, shapes, load_target("cpu_x86"))
    lat = {p: cm.latency_ms(_uniform(graph, p)) for p in ("w8a8", "fp32", "w4a8", "w8a16", "w16a16", "fp16")}
    assert lat["w8a8"] < lat["fp32"]
    assert all(lat[p] > lat["fp32"] for p in ("w4a8", "w8a16", "w16a16", "fp16")), lat
    # on the CNN, a w8a8 profile with one group at 16 bits loses the fusion of the group before it too
    graph, shapes = cnn
    cm = CostModel(graph, shapes, load_target("cpu_x86"))
    one16 = cm.latency_ms(Profile.make({"conv1": "w8a8", "conv2": "w8a16", "fc": "w8a8"}))
    assert one16 > cm.latency_ms(_uniform(graph, "w8a8"))


def test_qdq_target_needs_no_roofline_fields(tmp_path: Path) -> None:
    target = _qdq_target()
    assert target.kind == "qdq_runtime" and target.bandwidth_gbps is None and target.throughput_gmacs is None
    assert target.to_json()["qdq_runtime"]["ns_per_conv_mac"]["int8"] == 0.5


_GOOD = ("ns_per_conv_mac: {fp32: 1, fp16: 1, int8: 1, qdq: 1}, ns_per_matmul_mac: {fp32: 1, fp16: 1, int8: 1, "
         "qdq: 1}, ns_per_activation: {fp32: 0, fp16: 0, int8: 0, a4: 0, a8: 0, a16: 0}, ns_per_pool_element: "
         "{fp32: 0, fp16: 0, int8: 0, a4: 0, a8: 0, a16: 0}, ns_per_weight_dequant: {int4: 0, int8: 0, int16: 0}")


@pytest.mark.parametrize(("section", "field"), [
    ("{" + _GOOD.replace(", ns_per_weight_dequant: {int4: 0, int8: 0, int16: 0}", "") + "}",
     "qdq_runtime.ns_per_weight_dequant"),
    ("{" + _GOOD.replace("int8: 1, qdq: 1}, ns_per_matmul", "int8: 1}, ns_per_matmul") + "}",
     "qdq_runtime.ns_per_conv_mac.qdq"),
    ("{" + _GOOD.replace("int8: 1, qdq: 1}, ns_per_matmul", "int8: -1, qdq: 1}, ns_per_matmul") + "}",
     "qdq_runtime.ns_per_conv_mac.int8"),
    ("{" + _GOOD.replace("qdq: 1}, ns_per_matmul", "qdq: 1, int3: 1}, ns_per_matmul") + "}",
     "qdq_runtime.ns_per_conv_mac.int3"),
    ("{ns_per_conv_mac: 3}", "qdq_runtime.ns_per_conv_mac"),
    ("[1, 2]", "qdq_runtime"),
    ("{" + _GOOD + ", extra: {}}", "qdq_runtime.extra"),
])
def test_bad_qdq_runtime_names_field(tmp_path: Path, section: str, field: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"qdq_runtime: {section}\n")
    with pytest.raises(TargetError) as err:
        load_target(path)
    assert str(path) in str(err.value) and field in str(err.value)
