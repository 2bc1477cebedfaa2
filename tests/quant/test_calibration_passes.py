"""A calibration pass keeps what its encodings read: ranges for min-max, histograms for mse/percentile; the
equal-width histogram gives numpy's counts for the same edges (without numpy's sort)."""

from __future__ import annotations

import numpy as np
import onnx
from conftest import cnn_data, cnn_model

from sweeper.model.graph import ModelGraph
from sweeper.quant.calibration import BINS, collect, uniform_histogram
from sweeper.quant.encoding import compute_encoding


def test_uniform_histogram_equals_numpy_on_the_same_edges() -> None:
    rng = np.random.default_rng(0)
    for scale in (1e-30, 1e-3, 1.0, 1e6):
        x = (rng.standard_normal(5000) * scale).astype(np.float32)
        for lo, hi in ((float(x.min()), float(x.max())), (float(x.min()) * 1.7, float(x.max()) * 3.1)):
            edges = np.linspace(lo, hi, BINS + 1)
            assert np.array_equal(uniform_histogram(x, edges), np.histogram(x, edges)[0])


def test_min_max_passes_keep_ranges_only_and_the_same_encodings() -> None:
    model, data = cnn_model(), cnn_data(64)
    graph = ModelGraph(model)
    full = collect(model, graph.activations, [], data, graph.input_names, batch_size=16)
    ranges = collect(model, graph.activations, [], data, graph.input_names, batch_size=16, histograms=False)
    for t in graph.activations:
        a, b = full.tensors[t], ranges.tensors[t]
        assert a.hist is not None and b.hist is None
        assert (a.min, a.max, a.count) == (b.min, b.max, b.count)
        for bits in (4, 8, 16):
            ea, eb = compute_encoding(a, bits), compute_encoding(b, bits)
            assert np.array_equal(ea.scale, eb.scale) and np.array_equal(ea.offset, eb.offset)


def _masked_graph() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """x -> s = x * 2 -> masked = s + mask (a -3.4e38 sentinel at x < -1), lg = Log(x) (NaN below 0, -inf at 0),
    sq = Sqrt(x) (NaN below 0, no inf), big = Exp(x * 100) (inf for large x), y = Relu(s)."""
    from onnx import TensorProto, helper, numpy_helper

    f32 = np.float32
    inits = [numpy_helper.from_array(np.array(2.0, f32), "two"), numpy_helper.from_array(np.array(-1.0, f32), "m1"),
             numpy_helper.from_array(np.array(np.finfo(f32).min, f32), "neg"),
             numpy_helper.from_array(np.array(0.0, f32), "zero"), numpy_helper.from_array(np.array(100.0, f32), "hundred")]
    nodes = [helper.make_node("Mul", ["x", "two"], ["s"]),
             helper.make_node("Less", ["x", "m1"], ["low"]),
             helper.make_node("Where", ["low", "neg", "zero"], ["mask"]),
             helper.make_node("Add", ["s", "mask"], ["masked"]),
             helper.make_node("Log", ["x"], ["lg"]),
             helper.make_node("Sqrt", ["x"], ["sq"]),
             helper.make_node("Mul", ["x", "hundred"], ["x100"]),
             helper.make_node("Exp", ["x100"], ["big"]),
             helper.make_node("Relu", ["s"], ["y"])]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "masked", "lg", "sq", "big")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])], outs,
                              inits)
    x = np.random.default_rng(1).standard_normal((40, 8)).astype(f32)
    x[3, 2], x[0, 0], x[16, 0], x[32, 0] = 0.0, 1.0, 1.0, 1.0  # each batch's first value real: NaN comes later
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), {"x": x}


def test_ranges_reduced_in_the_session_equal_ranges_of_whole_tensors() -> None:
    """The range-only pass reduces tensors inside ONNX Runtime; a range meeting a sentinel, -inf, inf or NaN
    (which ReduceMin/ReduceMax may skip) is taken again from the whole tensor: every statistic is the one the
    whole-tensor pass gives, sentinel counts and fp16 underflow counts included, and so are the shapes."""
    model, data = _masked_graph()
    tensors = ["x", "s", "masked", "lg", "sq", "big", "y"]
    whole = collect(model, tensors, ["x100"], data, ["x"], batch_size=16, histograms=False, fp16_flush=None)
    for flush in ((), ("s",)):
        reduced = collect(model, tensors, ["x100"], data, ["x"], batch_size=16, histograms=False, fp16_flush=flush)
        assert reduced.shapes == whole.shapes and reduced.samples == whole.samples == 40
        for t in tensors:
            a, b = whole.tensors[t], reduced.tensors[t]
            assert (a.min, a.max, a.count, a.sentinels, a.shape) == (b.min, b.max, b.count, b.sentinels, b.shape), t
            assert b.fp16_flushed == (a.fp16_flushed if t in flush else 0)
    assert whole.tensors["masked"].sentinels > 0 and whole.tensors["sq"].count < 40 * 8  # the premise
    assert not np.isfinite(np.exp(data["x"] * 100)).all()


def test_range_readers_follow_their_producers() -> None:
    """Each tensor's ReduceMin/ReduceMax/ReduceSum/Shape come right after the node that makes it (a graph input's
    first): run in priority order, a tensor is freed once read instead of living to the end of the run."""
    from sweeper.quant.calibration import _with_range_outputs

    model, _ = _masked_graph()
    aug, names = _with_range_outputs(model, ["x", "s", "lg"], ["y"], ["x"])
    order = [n.output[0] for n in aug.graph.node]
    for t in ("x", "s", "lg"):
        start = 0 if t == "x" else order.index(t) + 1
        assert set(order[start:start + 4]) == set(names[t]), t
    assert len(aug.graph.node) == len(model.graph.node) + 12


def test_tensors_known_to_hold_sentinels_are_read_whole_in_one_pass() -> None:
    """Given the tensors an earlier pass found sentinels in, the range-only pass reads them whole at once: the
    same statistics, and no second pass (one session run per batch: 40 samples in batches of 16, 3 runs)."""
    import onnxruntime as ort

    model, data = _masked_graph()
    tensors = ["x", "s", "masked", "y"]
    first = collect(model, tensors, [], data, ["x"], batch_size=16, histograms=False, fp16_flush=())
    hinted_at = [t for t, st in first.tensors.items() if st.sentinels]
    assert hinted_at == ["masked"]
    runs = []
    real_run = ort.InferenceSession.run
    ort.InferenceSession.run = lambda self, *a, **k: runs.append(1) or real_run(self, *a, **k)
    try:
        again = collect(model, tensors, [], data, ["x"], batch_size=16, histograms=False, fp16_flush=(),
                        whole=hinted_at)
        hinted_runs, runs[:] = len(runs), []
        collect(model, tensors, [], data, ["x"], batch_size=16, histograms=False, fp16_flush=())
    finally:
        ort.InferenceSession.run = real_run
    assert hinted_runs == 3 and len(runs) == 6
    for t in tensors:
        a, b = first.tensors[t], again.tensors[t]
        assert (a.min, a.max, a.count, a.sentinels) == (b.min, b.max, b.count, b.sentinels), t
