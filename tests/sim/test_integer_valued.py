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
