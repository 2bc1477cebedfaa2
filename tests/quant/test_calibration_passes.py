"""A calibration pass keeps what its encodings read: ranges for min-max, histograms for mse/percentile; the
equal-width histogram gives numpy's counts for the same edges (without numpy's sort)."""

from __future__ import annotations

import numpy as np
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
