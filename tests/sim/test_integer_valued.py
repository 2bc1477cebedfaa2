"""A float used as an integer (ids carried as floats, then Cast to int64 and gathered: a Keras embedding through
tf2onnx) is kept float at every precision: any grid that does not hold the ids exactly moves some below the
integer and the Cast truncates them to the previous id."""

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
from sweeper.quant.keep_float import integer_readers
from sweeper.quant.profile import Profile
from sweeper.sim.quantsim import QuantSim


def _embedding_model(vocab: int = 181) -> onnx.ModelProto:
    table = np.random.default_rng(0).standard_normal((vocab, 8)).astype(np.float32)
    w = (np.random.default_rng(1).standard_normal((4, 8)) * 0.3).astype(np.float32)
    nodes = [helper.make_node("Cast", ["ids"], ["ids_int"], to=TensorProto.INT64, name="cast"),
             helper.make_node("Gather", ["table", "ids_int"], ["emb"], axis=0, name="embed"),
             helper.make_node("Gemm", ["emb", "w"], ["y"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "embed", [helper.make_tensor_value_info("ids", TensorProto.FLOAT, ["N"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                              [numpy_helper.from_array(table, "table"), numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_integer_readers_are_casts_to_integer_types() -> None:
    casts = [helper.make_node("Cast", ["t"], ["a"], to=TensorProto.INT64, name="c1"),
             helper.make_node("Cast", ["t"], ["b"], to=TensorProto.FLOAT16, name="c2"),
             helper.make_node("Cast", ["t"], ["c"], to=TensorProto.BOOL, name="c3")]
    assert integer_readers("t", casts) == ["Cast c1", "Cast c3"]


def test_float_ids_stay_float_and_every_precision_gathers_the_right_rows(tmp_path: Path) -> None:
    ids = np.random.default_rng(2).integers(0, 181, 512).astype(np.float32)
    exp = load_experiment(write_experiment(tmp_path, _embedding_model(), {"ids": ids}, candidates="[w8a8, w16a16]"))
    ws = Workspace(exp)
    try:
        assert set(ws.table.integer_valued) == {"ids"}
        groups = [g.name for g in ws.graph.groups]
        sim = QuantSim(ws.graph, ws.table, threads=1, precisions=exp.candidates, extra_outputs=["emb"])
        fp32_emb = ws.graph.weight_array("table")[ids.astype(np.int64)]
        for prec in ("w8a8", "w16a16"):
            profile = Profile.uniform(groups, prec)
            sim.apply(profile)
            y, emb = sim.run({"ids": ids})
            assert np.array_equal(emb, fp32_emb)  # every id gathers its own row
            path = tmp_path / f"{prec}.onnx"
            onnx.save(export_qdq(ws.graph, ws.table, profile), str(path))
            assert np.array_equal(reference_session(str(path), 1).run(None, {"ids": ids})[0], y)  # sim = export
    finally:
        ws.close()


def _hand_softmax_model() -> onnx.ModelProto:
    """x -> Gemm -> scores (large: no maximum subtracted), masked with -inf where ``keep`` is false -> Exp ->
    e / ReduceSum(e) -> Gemm: a masked softmax written by hand (e holds exact zeros, so it is not positive)."""
    rng = np.random.default_rng(3)
    w1 = (rng.standard_normal((6, 4)) * 4.0).astype(np.float32)
    w2 = (rng.standard_normal((3, 6)) * 0.3).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["scores"], transB=1, name="fc1"),
             helper.make_node("Where", ["keep", "scores", "neg_inf"], ["masked"], name="mask"),
             helper.make_node("Exp", ["masked"], ["e"], name="exp"),
             helper.make_node("ReduceSum", ["e", "axes"], ["total"], keepdims=1, name="sum"),
             helper.make_node("Div", ["e", "total"], ["p"], name="normalize"),
             helper.make_node("Gemm", ["p", "w2"], ["y"], transB=1, name="fc2")]
    graph = helper.make_graph(nodes, "softmax_by_hand",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
                               helper.make_tensor_value_info("keep", TensorProto.BOOL, ["N", 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
                               numpy_helper.from_array(np.array([-1], np.int64), "axes"),
                               numpy_helper.from_array(np.array(-np.inf, np.float32), "neg_inf")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_softmax_written_by_hand_keeps_its_exponentials_float(tmp_path: Path) -> None:
    """e spans many decades (exp of scores up to ~40 without the maximum subtracted): on any linear grid the
    rows whose largest score is far below the calibration's maximum become all zeros (0 / 0)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((256, 4)).astype(np.float32)
    keep = rng.random((256, 6)) < 0.7
    keep[:, 0] = True  # every row keeps a position
    data = {"x": x, "keep": keep}
    exp = load_experiment(write_experiment(tmp_path, _hand_softmax_model(), data, candidates="[w8a8, w16a16]"))
    ws = Workspace(exp)
    try:
        assert set(ws.table.normalized) == {"e", "total"} and not ws.table.always_float("p")
        assert ws.stats.tensors["e"].min == 0.0  # the masked zeros: the positive-chain rule does not apply
        groups = [g.name for g in ws.graph.groups]
        sim = QuantSim(ws.graph, ws.table, threads=1, precisions=exp.candidates, extra_outputs=["p"])
        for prec in ("w8a8", "w16a16"):
            sim.apply(Profile.uniform(groups, prec))
            p = sim.run(data)[1]  # the quotient, before its own quantizer
            assert np.isfinite(p).all() and np.allclose(p.sum(-1), 1.0, atol=1e-5), prec  # rows stay distributions
            assert np.all(p[~keep] == 0.0), prec
    finally:
        ws.close()
