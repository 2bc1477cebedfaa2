"""QDQ export: checker-clean, plain ONNX Runtime, Q/DQ counts, and the simulation reproduced exactly."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from sweeper.export import export_qdq, read_encodings, save_export, write_encodings
from sweeper.model.graph import ModelGraph
from sweeper.model.intake import prepare_model
from sweeper.model.session import reference_mode, reference_session
from sweeper.quant import calibration
from sweeper.quant.profile import Profile
from sweeper.sim.encodings import EncodingTable, QuantConfig
from sweeper.sim.quantsim import QuantSim

UNIFORM = ["w8a8", "w8a16", "w16a16", "fp16", "fp32", "w4a8", "w2a8", "w4a4", "w8a2"]
PRECISIONS = ["fp32", "w8a8", "w8a16", "w16a16", "fp16", "w4a8", "w4a16", "w2a8", "w4a4", "w8a2"]
STANDARD = {"", "ai.onnx", "com.microsoft"}


def _w(rng: np.random.Generator, name: str, shape: tuple[int, ...], scale: float = 0.3) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def _model(nodes, inputs, outputs, inits, opset):  # noqa: ANN001, ANN202
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def cnn(opset: int = 17) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Conv+Relu -> MaxPool -> Conv+Relu -> Flatten -> Gemm (model output quantized)."""
    rng = np.random.default_rng(0)
    inits = [_w(rng, "w1", (4, 1, 3, 3)), _w(rng, "b1", (4,), 0.1), _w(rng, "w2", (6, 4, 3, 3)),
             _w(rng, "b2", (6,), 0.1), _w(rng, "w3", (10, 96)), _w(rng, "b3", (10,), 0.1)]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Flatten", ["r2"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits, opset)
    return model, {"x": np.random.default_rng(1).standard_normal((24, 1, 8, 8)).astype(np.float32)}


def attention(opset: int = 13) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Linear (MatMul with a constant + Add) -> scores q x^T -> Softmax -> MatMul with x (two activations)."""
    rng = np.random.default_rng(2)
    inits = [_w(rng, "wq", (8, 8)), _w(rng, "bq", (8,), 0.1)]
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q0"]),
        helper.make_node("Add", ["q0", "bq"], ["q"]),
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "xt"], ["s"]),
        helper.make_node("Softmax", ["s"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "x"], ["y"]),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, 8])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6, 8])], inits, opset)
    return model, {"x": np.random.default_rng(3).standard_normal((24, 6, 8)).astype(np.float32)}


def residual(opset: int = 21) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Conv+Relu -> Conv -> Add(skip) -> Relu (a quantized graph output)."""
    rng = np.random.default_rng(4)
    inits = [_w(rng, "w1", (4, 2, 3, 3)), _w(rng, "b1", (4,), 0.1), _w(rng, "w2", (4, 4, 3, 3)),
             _w(rng, "b2", (4,), 0.1)]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 6, 6])], inits, opset)
    return model, {"x": np.random.default_rng(5).standard_normal((24, 2, 6, 6)).astype(np.float32)}


MODELS = {"cnn": cnn, "attention": attention, "residual": residual}
_BUILT: dict[str, tuple] = {}


def build(name: str) -> tuple:
    """(graph, table, sim, data), built once per model for the whole module."""
    if name not in _BUILT:
        model, data = MODELS[name.removesuffix("@keep-opset")]()
        prepared = prepare_model(model, convert=not name.endswith("@keep-opset"))
        graph = ModelGraph(prepared)
        stats = calibration.collect(prepared, graph.activations, [], data, graph.input_names, batch_size=8)
        table = EncodingTable(graph, stats, QuantConfig())
        _BUILT[name] = (graph, table, QuantSim(graph, table, threads=1, precisions=PRECISIONS), data)
    return _BUILT[name]


def session(model: onnx.ModelProto, level: str = "ORT_DISABLE_ALL") -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def uniform(graph: ModelGraph, prec: str) -> Profile:
    return Profile.uniform([g.name for g in graph.groups], prec)


def mixed(graph: ModelGraph) -> Profile:
    cycle = ["w8a16", "w4a8", "fp16", "w2a8", "w16a16", "fp32", "w8a8"]
    return Profile.make({g.name: cycle[k % len(cycle)] for k, g in enumerate(graph.groups)})


def sim_outputs(sim: QuantSim, profile: Profile, data: dict[str, np.ndarray]) -> tuple[list, list]:
    """(QuantSim.run, the simulation graph run with ORT_DISABLE_ALL on the same feeds)."""
    sim.apply(profile)
    feeds = dict(sim.bound)
    feeds.update(data)
    if not hasattr(sim, "_plain_session"):
        sim._plain_session = session(sim.model)  # type: ignore[attr-defined]
    return sim.run(data), sim._plain_session.run(None, feeds)  # type: ignore[attr-defined]


def int_act_quantizers(graph: ModelGraph, table: EncodingTable, profile: Profile) -> int:
    n = 0
    for t in graph.activations:
        enc = table.act_encoding(t, profile[table.group_of[t]])
        n += enc is not None and enc.dtype == "int"
    return n


CASES = [(m, p) for m in MODELS for p in [*UNIFORM, "mixed"]]


@pytest.mark.parametrize(("model_name", "prec"), CASES, ids=[f"{m}-{p}" for m, p in CASES])
def test_export_reproduces_the_simulation(model_name: str, prec: str) -> None:
    graph, table, sim, data = build(model_name)
    profile = mixed(graph) if prec == "mixed" else uniform(graph, prec)
    exported = export_qdq(graph, table, profile)
    onnx.checker.check_model(exported)
    assert {o.domain for o in exported.opset_import} >= {""}
    assert all(n.domain in STANDARD for n in exported.graph.node)
    assert [i.name for i in exported.graph.input] == graph.input_names
    assert [o.name for o in exported.graph.output] == graph.output_names
    ops = [n.op_type for n in exported.graph.node]
    n_q = int_act_quantizers(graph, table, profile)
    assert ops.count("QuantizeLinear") == n_q
    if prec not in ("fp16", "fp32"):
        assert n_q > 0 and ops.count("DequantizeLinear") > n_q  # weights are DequantizeLinear'd too
    out = session(exported).run(None, data)
    ref, ref_plain = sim_outputs(sim, profile, data)
    # the simulation's own graph with the same kernels (no graph optimizations): identical, every profile
    for a, b in zip(out, ref_plain, strict=True):
        assert np.array_equal(a, b)
    # QuantSim's own session (NCHWc layout kernels in the cnn; MatMul weights and
    # a residual Add after a Conv keep the attention and residual models PLAIN) is reproduced
    # under the options the export names in its metadata
    assert reference_mode(exported) == sim.mode == ("layout" if model_name == "cnn" else "plain")
    for a, b in zip(reference_session(exported).run(None, data), ref, strict=True):
        assert np.array_equal(a, b)
    # default ORT optimizations run it too (QDQ fusions may round differently; top-1 must agree)
    opt = session(exported, "ORT_ENABLE_ALL").run(None, data)[0]
    assert (opt.argmax(-1) == ref[0].argmax(-1)).mean() >= 0.95


def test_containers_and_opset() -> None:
    # an opset-13 graph analysed without intake (which would convert it to 21): the exporter converts
    # only when a precision needs it
    model, data = attention()
    graph = ModelGraph(model)
    stats = calibration.collect(model, graph.activations, [], data, graph.input_names, batch_size=8)
    table = EncodingTable(graph, stats, QuantConfig())
    assert max(o.version for o in graph.model.opset_import if o.domain in ("", "ai.onnx")) == 13
    m8 = export_qdq(graph, table, uniform(graph, "w8a8"))
    assert max(o.version for o in m8.opset_import if o.domain == "") == 13  # nothing needed a conversion
    m16 = export_qdq(graph, table, uniform(graph, "w16a16"))
    assert max(o.version for o in m16.opset_import if o.domain == "") == 21
    types = {t.name: t.data_type for t in m16.graph.initializer}
    assert types["wq_quantized"] == TensorProto.INT16 and types["x_zero_point"] == TensorProto.UINT16
    m2 = export_qdq(graph, table, uniform(graph, "w2a8"))
    w2 = next(t for t in m2.graph.initializer if t.name == "wq_quantized")
    assert w2.data_type == TensorProto.INT4
    assert set(np.unique(numpy_helper.to_array(w2))) <= {-2, -1, 0, 1}


def test_conv_and_gemm_biases_are_int32() -> None:
    graph, table, _, _ = build("cnn")
    m = export_qdq(graph, table, uniform(graph, "w8a8"))
    types = {t.name: t.data_type for t in m.graph.initializer}
    assert all(types[f"b{k}_quantized"] == TensorProto.INT32 for k in (1, 2, 3))
    assert not {"w1", "b1"} & set(types)  # replaced by DequantizeLinear outputs of the same name
    fp16 = export_qdq(graph, table, uniform(graph, "fp16"))
    types16 = {t.name: t.data_type for t in fp16.graph.initializer}
    assert types16["w1_fp16"] == TensorProto.FLOAT16 and types16["b1_fp16"] == TensorProto.FLOAT16


def test_int4_activation_containers_run_unoptimized() -> None:
    graph, table, sim, data = build("cnn")
    profile = uniform(graph, "w4a4")
    m = export_qdq(graph, table, profile, int4_activations=True)
    zps = [t for t in m.graph.initializer if t.name.endswith("_zero_point") and not t.dims]
    assert zps and all(t.data_type in (TensorProto.UINT4, TensorProto.INT4) for t in zps)
    _, ref_plain = sim_outputs(sim, profile, data)
    assert np.array_equal(session(m).run(None, data)[0], ref_plain[0])


def test_intake_converts_to_opset_21_once_and_reports_it() -> None:
    from sweeper.model.intake import opset_report

    graph, table, sim, data = build("attention")  # given at opset 13
    assert opset_report(graph.model) == {"original": 13, "used": 21, "converted": True}
    m16 = export_qdq(graph, table, uniform(graph, "w16a16"))
    assert max(o.version for o in m16.opset_import if o.domain == "") == 21
    # simulation and export run the same opset: standard 16-bit Q/DQ in both, no contrib ops
    assert not any(n.domain == "com.microsoft" for n in m16.graph.node)
    assert sim._q16_domain == ""


def test_fallback_without_opset_conversion() -> None:
    """No converter (intake kept opset 17): 16-bit via com.microsoft Q/DQ in the simulation and the export,
    4/2-bit weights in an 8-bit container; still exact."""
    graph, table, sim, data = build("cnn@keep-opset")
    assert sim._q16_domain == "com.microsoft"
    for prec in ("w16a16", "w4a8", "w2a8"):
        profile = uniform(graph, prec)
        m = export_qdq(graph, table, profile, allow_convert=False)
        assert max(o.version for o in m.opset_import if o.domain == "") == 17
        if prec == "w16a16":
            assert any(n.domain == "com.microsoft" and n.op_type == "QuantizeLinear" for n in m.graph.node)
        else:
            w = next(t for t in m.graph.initializer if t.name == "w1_quantized")
            assert w.data_type == TensorProto.INT8
        _, ref_plain = sim_outputs(sim, profile, data)
        assert np.array_equal(session(m).run(None, data)[0], ref_plain[0])


def test_encodings_round_trip(tmp_path) -> None:  # noqa: ANN001
    graph, table, sim, data = build("residual")
    profile = mixed(graph)
    doc = table.to_aimet(profile)
    path = tmp_path / "model.encodings"
    write_encodings(path, doc)
    loaded = read_encodings(path)
    assert loaded == json.loads(json.dumps(doc))
    fresh = EncodingTable(graph, table.stats, QuantConfig())
    back = fresh.load_aimet(loaded)
    # a group without weights has no weight bit width in the file: load_aimet reports it as w16aY
    with_weights = {g.name for g in graph.groups if g.weights}
    assert {k: v for k, v in back.as_dict().items() if k in with_weights} == \
        {k: v for k, v in profile.as_dict().items() if k in with_weights}
    assert all(back[g.name].act_bits == profile[g.name].act_bits and back[g.name].is_float == profile[g.name].is_float
               for g in graph.groups)
    sim2 = QuantSim(graph, fresh, threads=1, precisions=PRECISIONS)
    sim.apply(profile)
    sim2.apply(profile)
    assert all(np.array_equal(a, b) for a, b in zip(sim.run(data), sim2.run(data), strict=True))
    e1, e2 = export_qdq(graph, table, profile), export_qdq(graph, fresh, profile)
    assert all(np.array_equal(a, b) for a, b in
               zip(session(e1).run(None, data), session(e2).run(None, data), strict=True))


def test_save_export_writes_both_files_atomically(tmp_path) -> None:  # noqa: ANN001
    graph, table, _, data = build("residual")
    profile = uniform(graph, "w8a8")
    m = export_qdq(graph, table, profile)
    onnx_path, enc_path = tmp_path / "out" / "model.onnx", tmp_path / "out" / "model.encodings"
    save_export(m, table.to_aimet(profile), onnx_path, enc_path)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.encodings", "model.onnx"]
    assert onnx.load(str(onnx_path)) == m
    assert read_encodings(enc_path)["version"] == "1.0.0"
    bad = table.to_aimet(profile)
    bad["activation_encodings"][0]["scale"] = [-1.0]
    with pytest.raises(ValueError, match="scale"):
        save_export(m, bad, tmp_path / "b" / "m.onnx", tmp_path / "b" / "m.encodings")
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


@pytest.mark.parametrize(("text", "problem"), [
    ("{not json", "not valid JSON"),
    ("[]", "top level"),
    ('{"version": "0.6.1", "activation_encodings": [], "param_encodings": []}', "version"),
    ('{"version": "1.0.0", "activation_encodings": []}', "param_encodings"),
    ('{"version": "1.0.0", "activation_encodings": [{"name": "x", "dtype": "INT", "enc_type": "PER_TENSOR",'
     ' "bw": 8, "is_sym": false, "scale": [0.1], "offset": [1]}], "param_encodings": []}', "offset"),
    ('{"version": "1.0.0", "activation_encodings": [{"name": "x", "dtype": "INT", "enc_type": "PER_TENSOR",'
     ' "bw": 3, "is_sym": false, "scale": [0.1], "offset": [0]}], "param_encodings": []}', "'bw'"),
    ('{"version": "1.0.0", "activation_encodings": [], "param_encodings": [{"name": "w", "dtype": "INT",'
     ' "enc_type": "PER_TENSOR", "bw": 8, "is_sym": true, "scale": [0.1, 0.2], "offset": [-128, -128]}]}',
     "PER_TENSOR"),
    ('{"version": "1.0.0", "activation_encodings": [{"name": "x", "dtype": "INT", "bw": 8, "scale": [NaN],'
     ' "offset": [0]}], "param_encodings": []}', "NaN"),
])
def test_read_encodings_rejects_malformed_files(tmp_path, text: str, problem: str) -> None:  # noqa: ANN001
    path = tmp_path / "broken.encodings"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        read_encodings(path)
    assert str(path) in str(err.value) and problem in str(err.value)
