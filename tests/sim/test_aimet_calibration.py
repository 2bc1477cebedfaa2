"""Activations are calibrated with the weights quantized at the profile's weight bit width (as AIMET does),
and ``calibration.bias: float`` keeps biases float in the simulation and the export alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import cnn_data, cnn_model, write_experiment

from sweeper.config.experiment import load_experiment
from sweeper.export import export_qdq
from sweeper.model.session import ort_session
from sweeper.pipeline import Workspace
from sweeper.quant.precision import Precision
from sweeper.quant.profile import Profile
from sweeper.sim.quantsim import QuantSim


def _ws(tmp: Path, extra: str = "") -> Workspace:
    return Workspace(load_experiment(write_experiment(tmp, cnn_model(), cnn_data(64), candidates="[w8a8, w2a8]",
                                                      extra=extra)))


def test_activation_ranges_come_from_the_model_with_quantized_weights(tmp_path: Path) -> None:
    ws = _ws(tmp_path)
    try:
        assert {2, 8, 16} <= set(ws.stats.by_weight_bits)
        t = "y"  # the model output, after two quantized convs and a Gemm
        fp32, w2 = ws.stats.tensors[t], ws.stats.by_weight_bits[2][t]
        assert (w2.min, w2.max) != (fp32.min, fp32.max)  # 2-bit weights move the range
        enc2 = ws.table.act_encoding(t, Precision.parse("w2a8"))
        assert enc2.scale[0] == ws.table.activation(t, 8, weight_bits=2).scale[0]
        assert enc2.scale[0] != ws.table.activation(t, 8, weight_bits=32).scale[0]
        # activations-only profiles (float weights) keep the FP32 statistics
        assert ws.table.act_encoding(t, Precision.parse("w32a8")).scale[0] == ws.table.activation(t, 8).scale[0]
    finally:
        ws.close()


def test_float_bias_mode_keeps_biases_float_in_sim_and_export(tmp_path: Path) -> None:
    ws = _ws(tmp_path, extra="calibration:\n  bias: float\n")
    try:
        profile = Profile.uniform([g.name for g in ws.graph.groups], "w8a8")
        assert all(ws.table.bias_encoding(b, profile) is None for b in ws.graph.bias_quantizers)
        model = export_qdq(ws.graph, ws.table, profile)
        assert not any(t.name.endswith("_quantized") and t.data_type == 6 for t in model.graph.initializer)  # no int32
        sim = QuantSim(ws.graph, ws.table, precisions=["w8a8"])
        sim.apply(profile)
        x = cnn_data(16, seed=5)
        plain = ort_session(sim.model, optimize=False).run(None, {**sim.bound, **x})[0]
        np.testing.assert_array_equal(plain, ort_session(model, optimize=False).run(None, x)[0])
    finally:
        ws.close()
