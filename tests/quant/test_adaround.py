"""AdaRound (sweeper.techniques.adaround) on tiny onnx.helper graphs: grid, initialisation, gradient, result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import cnn_data, cnn_model, fragile_mlp
from onnx import TensorProto, helper, numpy_helper

from sweeper.errors import SweeperError
from sweeper.eval.data import Dataset
from sweeper.quant.encoding import compute_weight_encoding
from sweeper.quant.precision import Precision
from sweeper.quant.profile import Profile
from sweeper.techniques.activation_sampler import ActivationStore, Samples
from sweeper.techniques.adaround.driver import adaround, working_table
from sweeper.techniques.adaround.layers import find_layers
from sweeper.techniques.adaround.optimize import (
    AdaRoundConfig,
    GridQuantizer,
    grad_v,
    recon_loss,
    rectified_sigmoid,
    round_loss,
    soft_rounding,
)

torch = pytest.importorskip("torch")
FAST = AdaRoundConfig(iterations=150)


def gemm_model(seed: int = 0) -> onnx.ModelProto:
    """x -> Gemm (transB) -> Relu -> Gemm."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.4).astype(np.float32), n)
             for n, s in (("w1", (24, 12)), ("b1", (24,)), ("w2", (24, 6)), ("b2", (6,)))]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["g1"], transB=1, name="fc1"),
             helper.make_node("Relu", ["g1"], ["r1"], name="relu1"),
             helper.make_node("Gemm", ["r1", "w2", "b2"], ["y"], name="fc2")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def gemm_data(n: int = 96) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(3).standard_normal((n, 12)).astype(np.float32)}


def uniform(graph, prec: str) -> Profile:  # noqa: ANN001
    return Profile.uniform([g.name for g in graph.groups], prec)


def run(graph, table, prec: str, data: dict[str, np.ndarray], cfg: AdaRoundConfig = FAST):  # noqa: ANN001, ANN201
    return adaround(graph, table, Precision.parse(prec), Dataset(data, arrays=data), cfg, threads=1, batch_size=32)


@pytest.mark.parametrize("symmetric", [True, False])
def test_initial_h_is_the_fractional_part_and_hard_rounding_is_nearest(symmetric: bool) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    for bits in (2, 4, 8):
        enc = compute_weight_encoding(w, bits, symmetric, 0)
        gq = GridQuantizer(w, enc)
        v0 = gq.initial_v()
        h0 = rectified_sigmoid(torch.from_numpy(v0)).numpy()
        np.testing.assert_allclose(h0, gq.frac, atol=2e-6)
        assert np.array_equal(gq.nearest(), enc.quantize(w))  # no exact ties in random weights
        # the soft weight at h = frac is the float weight wherever the grid does not saturate
        inside = (gq.base >= enc.qmin) & (gq.base <= enc.qmax - 1)
        assert inside.mean() > 0.5
        np.testing.assert_allclose(gq.soft_weight(h0)[inside], w[inside], rtol=1e-5, atol=1e-6)


def test_soft_weight_is_the_clamped_grid_formula() -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 10)).astype(np.float32)
    enc = compute_weight_encoding(w, 2, True, 0)  # 2-bit symmetric saturates the positive end
    gq = GridQuantizer(w, enc)
    h = rng.uniform(0, 1, w.shape).astype(np.float32)
    expect = (np.clip(gq.base + h, enc.qmin, enc.qmax) - gq.zp) * gq.scale
    np.testing.assert_allclose(gq.soft_weight(h), expect, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("beta", [None, 20.0, 2.5])
def test_written_out_gradient_is_autograds(beta: float | None) -> None:
    rng = np.random.default_rng(2)
    w = rng.standard_normal((5, 7)).astype(np.float32)
    enc = compute_weight_encoding(w, 4, True, 0)
    gq = GridQuantizer(w, enc)
    x = torch.from_numpy(rng.standard_normal((9, 7)).astype(np.float32))
    y = torch.from_numpy(rng.standard_normal((9, 5)).astype(np.float32))
    v = torch.from_numpy(gq.initial_v() + rng.normal(0, 0.5, w.shape).astype(np.float32))
    fwd = lambda a, b: torch.relu(a @ b.t())  # noqa: E731

    base, zp, scale = (torch.from_numpy(np.array(np.broadcast_to(a, w.shape), np.float32))
                       for a in (gq.base, gq.zp, gq.scale))
    va = v.clone().requires_grad_(True)
    wa = (torch.clamp(base + rectified_sigmoid(va), gq.qmin, gq.qmax) - zp) * scale
    loss = recon_loss(fwd(x, wa), y, -1) + (0 if beta is None else round_loss(va, beta, 0.01))
    loss.backward()

    w0, gscale = (torch.from_numpy(a) for a in gq.soft_parts())
    ws, sig, h_raw, h = soft_rounding(v, w0, gscale)
    torch.testing.assert_close(ws, wa.detach())
    ws.requires_grad_(True)
    (gw,) = torch.autograd.grad(recon_loss(fwd(x, ws), y, -1), [ws])
    torch.testing.assert_close(grad_v(gw, gscale, sig, h_raw, h, beta, 0.01), va.grad, rtol=1e-4, atol=1e-6)


def test_learned_rounding_stays_on_the_grid_next_to_the_weight(build_sim) -> None:  # noqa: ANN001
    data = cnn_data(64)
    graph, table, _ = build_sim(cnn_model(), data)
    res = run(graph, table, "w2a8", data)
    assert {w for w, _ in res.rounding} == set(graph.weight_quantizers)  # every layer learned (2 bits: it helps)
    for (name, bits), q in res.rounding.items():
        enc = table.weight(name, bits)
        assert bits == 2 and q.dtype == np.int64 and q.min() >= enc.qmin and q.max() <= enc.qmax
        gq = GridQuantizer(graph.weight_array(name), enc)
        lo, hi = np.clip(gq.base, enc.qmin, enc.qmax), np.clip(gq.base + 1, enc.qmin, enc.qmax)
        assert np.all((q == lo) | (q == hi))  # rounded down or up, never further
    assert table.rounding == {}  # the given table is not changed


@pytest.mark.parametrize(("model", "data"), [(cnn_model, cnn_data), (gemm_model, gemm_data)], ids=["conv", "gemm"])
def test_reconstruction_improves_on_nearest(build_sim, model, data) -> None:  # noqa: ANN001
    d = data()
    graph, table, _ = build_sim(model(), d)
    res = run(graph, table, "w2a8", d, AdaRoundConfig(iterations=300))
    assert [r.op_type for r in res.layers] == [graph.node_by_name[graph.weight_quantizers[w].op].op_type
                                               for w in graph.weight_quantizers]
    for r in res.layers:  # never worse than nearest; better where a flipped integer helps
        assert r.mse_adaround <= r.mse_nearest and r.kept == "adaround", r
        assert (r.mse_adaround < r.mse_nearest) == (r.changed > 0), r
    assert sum(r.changed > 0 for r in res.layers) >= 2
    fused = {r.op: r.activation for r in res.layers}
    assert fused[graph.weight_quantizers["w1"].op] == "Relu"  # the fused Relu is part of the reconstruction


def test_a_layer_that_reconstructs_worse_keeps_nearest(build_sim) -> None:  # noqa: ANN001
    # one huge Adam step rounds every weight by the sign of its first gradient: worse than nearest at 8 bits
    d = gemm_data()
    graph, table, _ = build_sim(gemm_model(), d)
    res = run(graph, table, "w8a8", d, AdaRoundConfig(iterations=2, lr=50.0))
    worse = [r for r in res.layers if r.mse_adaround > r.mse_nearest]
    assert worse and all(r.kept == "nearest" for r in worse)
    assert all((r.weight, 8) not in res.rounding for r in worse)


def test_simulation_equals_export_with_learned_rounding(build_sim) -> None:  # noqa: ANN001
    from sweeper.export.qdq import export_qdq
    from sweeper.model.session import reference_session
    from sweeper.sim.quantsim import QuantSim

    data = cnn_data(64)
    graph, table, sim_nearest = build_sim(cnn_model(), data)
    res = run(graph, table, "w2a8", data)
    work = working_table(table, 2)
    for (name, bits), q in res.rounding.items():
        work.set_rounding(name, bits, q)
    prof = uniform(graph, "w2a8")
    sim = QuantSim(graph, work, threads=1, precisions=["w2a8", "w4a8"])
    sim.apply(prof)
    ours = sim.run(data)[0]
    exported = reference_session(export_qdq(graph, work, prof), 1).run(None, data)[0]
    assert np.array_equal(ours, exported)
    sim_nearest.apply(prof)
    assert not np.array_equal(ours, sim_nearest.run(data)[0])  # the learned integers are what both use
    for (name, bits), q in res.rounding.items():  # and what the simulation dequantizes
        np.testing.assert_array_equal(work.weight_value(name, Precision.parse("w2a8")),
                                      work.weight(name, bits).dequantize(q))


def test_streamed_from_disk_gives_the_same_rounding(build_sim, tmp_path) -> None:  # noqa: ANN001
    data = cnn_data(64)
    graph, table, _ = build_sim(cnn_model(), data)
    in_memory = run(graph, table, "w4a8", data, AdaRoundConfig(iterations=40))
    on_disk = adaround(graph, table, Precision.parse("w4a8"), Dataset(data, arrays=data),
                       AdaRoundConfig(iterations=40, memory_mb=0.0), threads=1, batch_size=32, workdir=tmp_path)
    assert in_memory.rounding.keys() == on_disk.rounding.keys()
    for k in in_memory.rounding:
        assert np.array_equal(in_memory.rounding[k], on_disk.rounding[k])
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone


def test_activation_store_spills_past_its_budget(tmp_path) -> None:
    store = ActivationStore(tmp_path, budget_mb=1.0)
    a = np.arange(300_000, dtype=np.float32).reshape(1000, 300)  # 1.2 MB
    store.add("t", a[:500])  # in memory
    store.add("t", a[500:])  # past the budget: on disk
    kinds = [isinstance(c, np.memmap) for c in store.chunks("t")]
    assert kinds == [False, True] and len(list(tmp_path.glob("*.npy"))) == 1
    store.add("y", a[:, :3])
    s = Samples(store.chunks("t"), [a[:500, :3], a[500:, :3]], 64, np.random.default_rng(0))
    x, y = s.draw()
    assert x.shape == (64, 300) and torch.equal(x[:, :3], y)  # inputs and targets stay aligned across files
    store.drop("t")
    assert list(tmp_path.glob("*.npy")) == [] and store.in_memory == a[:, :3].nbytes


def test_layers_found_with_their_fused_ops() -> None:
    from sweeper.model.graph import ModelGraph
    from sweeper.model.intake import prepare_model

    layers, _ = find_layers(ModelGraph(fragile_mlp()))  # as given: MatMul + Add (its bias) + Relu
    assert [n.op_type for n in layers[0].chain] == ["Add", "Relu"] and layers[0].output == "r1"
    layers, skipped = find_layers(ModelGraph(prepare_model(fragile_mlp())))  # prepared: Gemm + Relu
    by_weight = {layer.weight: layer for layer in layers}
    assert by_weight["w1"].node.op_type == "Gemm" and [n.op_type for n in by_weight["w1"].chain] == ["Relu"]
    assert [n.op_type for n in by_weight["w2"].chain] == ["Relu"]
    assert by_weight["w3"].chain == [] and skipped == []
    shared = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["a"]), helper.make_node("MatMul", ["a", "w"], ["y"])], "s",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")])
    layers, skipped = find_layers(ModelGraph(helper.make_model(shared)))
    assert layers == [] and skipped[0]["reason"] == "weight shared by several ops"


def _one_layer(node: onnx.NodeProto, x_shape: list[int], inits: dict[str, np.ndarray],
               extra: list[onnx.NodeProto] = ()) -> onnx.ModelProto:  # type: ignore[assignment]
    out = (list(extra)[-1] if extra else node).output[0]
    graph = helper.make_graph([node, *extra], "one", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def _r(*shape: int) -> np.ndarray:
    return np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)


LAYERS = {
    "conv_asymmetric_pads": _one_layer(helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[0, 1, 2, 1],
                                                        strides=[2, 1], dilations=[1, 2]),
                                       [2, 3, 9, 8], {"w": _r(4, 3, 3, 3), "b": _r(4)}),
    "conv_grouped_1d": _one_layer(helper.make_node("Conv", ["x", "w"], ["y"], group=2, pads=[1, 1]),
                                  [2, 4, 10], {"w": _r(6, 2, 3)}),
    "conv_transpose": _one_layer(helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2],
                                                  pads=[1, 0, 0, 1], output_padding=[1, 1]),
                                 [2, 3, 5, 5], {"w": _r(3, 4, 3, 3), "b": _r(4)}),
    "gemm_alpha_beta": _one_layer(helper.make_node("Gemm", ["x", "w", "c"], ["y"], alpha=0.5, beta=2.0),
                                  [5, 7], {"w": _r(7, 3), "c": _r(3)}),
    "matmul_add_clip": _one_layer(helper.make_node("MatMul", ["x", "w"], ["m"]), [2, 5, 7],
                                  {"w": _r(7, 4), "b": _r(4), "lo": np.array(-0.2), "hi": np.array(0.7)},
                                  [helper.make_node("Add", ["b", "m"], ["a"]),
                                   helper.make_node("Clip", ["a", "lo", "hi"], ["y"])]),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_in_pytorch_is_the_onnx_op(name: str) -> None:
    from sweeper.model.graph import ModelGraph
    from sweeper.model.session import ort_session
    from sweeper.quant.precision import FP32
    from sweeper.techniques.adaround.torch_layer import layer_forward

    model = LAYERS[name]
    graph = ModelGraph(model)
    (layer,), skipped = find_layers(graph)
    assert skipped == [] and layer.output == "y"
    x = _r(*[d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim])
    want = ort_session(model, 1).run(None, {"x": x})[0]
    from sweeper.quant.calibration import CalibrationStats
    from sweeper.sim.encodings import EncodingTable, QuantConfig

    table = EncodingTable(graph, CalibrationStats({}, {}, 0), QuantConfig())  # FP32: biases as stored
    fwd = layer_forward(graph, table, layer, FP32)
    got = fwd(torch.from_numpy(x), torch.from_numpy(graph.weight_array(layer.weight).copy())).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_step_keeps_the_better_and_later_steps_use_it(tmp_path) -> None:  # noqa: ANN001
    """The Step on a tiny experiment (local pool): both metrics, the kept one, its files, and the experiment's
    ``rounding`` key that makes a new workspace store the weights with the learned integers."""
    import json

    from conftest import write_experiment

    from sweeper.api import Session
    from sweeper.search.step import PoolNeeds
    from sweeper.techniques.adaround.rounding_file import load_rounding

    exp = write_experiment(tmp_path, cnn_model(), cnn_data(64), metric="sqnr", candidates="[w8a8, w4a8]")
    with Session(exp, tracking=False) as s:
        doc = s.adaround("w2a8", iterations=120)
    assert json.loads((tmp_path / "out" / "adaround" / "results.json").read_text()) == doc
    assert doc["metric_after"] > doc["metric_before"] and doc["kept"] == "adaround"  # SQNR (dB) at 2 bits
    assert doc["metric"] == "sqnr" and doc["metric_kept"] == doc["metric_after"] and doc["onnx"].endswith("adaround.onnx")
    assert all(Path(doc[k]).is_file() for k in ("onnx", "encodings", "rounding"))
    learned = load_rounding(tmp_path / "out" / "adaround")
    assert learned and {b for _, b in learned} == {2}

    rounded = tmp_path / "rounded.yaml"
    rounded.write_text(exp.read_text().replace(f"output: {tmp_path / 'out'}", f"output: {tmp_path / 'out2'}")
                       + "rounding: out/adaround\n")  # relative to the experiment file
    with Session(rounded, tracking=False) as s:
        assert s.ws.table.rounding.keys() == learned.keys()
        res = next(iter(s.pool(PoolNeeds(("w2a8",))).map_unordered([uniform(s.ws.graph, "w2a8")])))
        assert res.metric == pytest.approx(doc["metric_after"])  # the workers simulate the learned integers
        with pytest.raises(SweeperError, match="already stores"):
            s.adaround("w2a8", iterations=10)
