"""Calibration settings end to end, through ``sweeper export`` and the simulation, on the tiny CNN of
conftest:

* ``act_symmetric: true`` + ``per_channel: false``: the AIMET encodings are symmetric (offset -2**(bw-1), the
  scale of AIMET's signed grid over the calibration range) and per tensor (one scale per weight); the exported
  QDQ model quantizes activations in a signed container with zero point 0 and keeps one weight scale; and the
  export reproduces the simulation bit for bit (under the session options it names).
* ``scheme: percentile`` / ``scheme: mse`` on an input with outliers: the percentile range is the percentile
  of the data (much narrower than min-max), the MSE range is narrower than min-max and quantizes the data with
  less error than min-max; sim = export bit for bit for both.

Each test runs in about a second (in process, no Ray, no MLflow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from conftest import cnn_data, cnn_model, write_experiment
from onnx import numpy_helper

from sweeper.model.session import reference_session


def _export(exp: Path, precision: str, out: Path) -> tuple[Path, dict[str, Any]]:
    """``sweeper export EXP --precision P --out OUT`` in process; the ONNX path and its encodings document."""
    from sweeper.cli import main

    assert main(["export", str(exp), "--precision", precision, "--out", str(out)]) == 0
    return out, json.loads(out.with_suffix(".encodings").read_text())


def _assert_sim_equals_export(exp: Path, exports: dict[str, Path], feeds: dict[str, np.ndarray]) -> None:
    """The simulation of each uniform precision (the experiment's own settings) against its exported QDQ model
    in plain ONNX Runtime under the session options the export names: identical outputs, bit for bit."""
    import sweeper
    from sweeper.quant.profile import Profile
    from sweeper.sim.quantsim import QuantSim

    with sweeper.Session(exp, tracking=False) as s:
        ws = s.ws
        groups = [g.name for g in ws.graph.groups]
        sim = QuantSim(ws.graph, ws.table, threads=1, precisions=list(exports))
        for precision, path in exports.items():
            sim.apply(Profile.uniform(groups, precision))
            want = sim.run(feeds)
            got = reference_session(str(path), 1).run(None, feeds)
            assert len(want) == len(got)
            for a, b in zip(want, got, strict=True):
                np.testing.assert_array_equal(a, b, err_msg=f"simulation vs export at {precision}")


def _by_name(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in entries}


def _symmetric_scale(lo: float, hi: float, bits: int) -> np.float32:
    """AIMET's signed symmetric grid over [lo, hi] (computed here independently of sweeper)."""
    neg = 2 ** (bits - 1)
    pos = neg - 1 if bits > 2 else neg
    return np.float32(max(max(hi, 0.0) / pos, -min(lo, 0.0) / neg))


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


# ------------------------------------------------------------------ symmetric activations, per-tensor weights
def test_symmetric_activations_and_per_tensor_weights(tmp_path: Path) -> None:
    data = cnn_data()
    model = cnn_model()
    exp = write_experiment(tmp_path, model, data, candidates="[w8a8, w4a8]",
                           extra="calibration:\n  act_symmetric: true\n  per_channel: false\n")
    exports = {}
    for precision in ("w8a8", "w4a8", "w8a16"):
        path, enc = _export(exp, precision, tmp_path / f"{precision}.onnx")
        exports[precision] = path
        w_bits, a_bits = (int(b) for b in precision[1:].split("a"))
        acts, params = _by_name(enc["activation_encodings"]), _by_name(enc["param_encodings"])
        assert acts and params
        # activations: symmetric, offset -2**(bw-1), at every quantizer
        for name, e in acts.items():
            assert e["is_sym"] is True and e["bw"] == a_bits, (precision, name, e)
            assert e["offset"] == [-(2 ** (a_bits - 1))], (precision, name, e)
        # the model input's scale is the signed grid over the calibration data's range
        x = data["x"]
        assert np.float32(acts["x"]["scale"][0]) == _symmetric_scale(float(x.min()), float(x.max()), a_bits)
        # weights: one scale per weight tensor (not one per output channel), over the whole tensor
        weights = _inits(model)
        assert set(params) == {"w1", "w2", "w3"}
        for name, e in params.items():
            w = weights[name]
            assert e["enc_type"] == "PER_TENSOR" and len(e["scale"]) == 1 and len(e["offset"]) == 1, (name, e)
            assert e["bw"] == w_bits and e["is_sym"] is True
            assert np.float32(e["scale"][0]) == _symmetric_scale(float(w.min()), float(w.max()), w_bits), name
        assert enc["quantizer_args"]["per_channel_quantization"] is False
        # the exported graph: activations in a signed container with zero point 0; one scale per weight
        m = onnx.load(str(path))
        inits = _inits(m)
        q_nodes = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
        assert {n.input[0] for n in q_nodes} >= {"x", "r1", "r2"}
        for n in q_nodes:
            zp = inits[n.input[2]]
            assert zp.dtype == (np.int8 if a_bits == 8 else np.int16), (precision, n.input[0], zp.dtype)
            assert not zp.any(), (precision, n.input[0])
        for name in ("w1", "w2", "w3"):
            dq = next(n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == name)
            assert inits[dq.input[1]].size == 1, (precision, name, inits[dq.input[1]].shape)
    _assert_sim_equals_export(exp, exports, data)


# ------------------------------------------------------------------------------ percentile and MSE schemes
def _outlier_data() -> dict[str, np.ndarray]:
    """A heavy-tailed input (Laplace) with a few far outliers: what percentile and MSE calibration are for."""
    rng = np.random.default_rng(3)
    x = rng.laplace(0.0, 1.0, (64, 1, 8, 8)).astype(np.float32)
    x[0, 0, 0, 0], x[1, 0, 2, 5], x[2, 0, 7, 7] = 60.0, 48.0, 55.0
    x[3, 0, 4, 4], x[4, 0, 1, 6] = -50.0, -42.0
    return {"x": x}


def _x_range(enc: dict[str, Any]) -> tuple[float, float, float]:
    """(lo, hi, scale) of the model input's asymmetric encoding: x = (q + offset) * scale, q in [0, 2**bw-1]."""
    e = _by_name(enc["activation_encodings"])["x"]
    scale, offset = float(e["scale"][0]), int(e["offset"][0])
    return offset * scale, (offset + 2 ** e["bw"] - 1) * scale, scale


def _fake_quant_error(x: np.ndarray, enc: dict[str, Any]) -> float:
    """Squared error of quantizing ``x`` with the encoding of input ``x`` (QuantizeLinear, DequantizeLinear)."""
    e = _by_name(enc["activation_encodings"])["x"]
    scale, zp = np.float32(e["scale"][0]), -int(e["offset"][0])
    q = np.clip(np.rint(x / scale) + zp, 0, 2 ** e["bw"] - 1)
    return float(np.sum(((q - zp) * scale - x).astype(np.float64) ** 2))


def _scheme_experiment(folder: Path, data: dict[str, np.ndarray], calibration: str) -> Path:
    folder.mkdir()
    return write_experiment(folder, cnn_model(), data, candidates="[w8a8, w8a4]", extra=calibration)


def test_percentile_and_mse_schemes(tmp_path: Path) -> None:
    data = _outlier_data()
    x = data["x"]
    exps = {"minmax": _scheme_experiment(tmp_path / "minmax", data, "calibration:\n  scheme: minmax\n"),
            "percentile": _scheme_experiment(tmp_path / "percentile", data,
                                             "calibration:\n  scheme: percentile\n  percentile: 99.5\n"),
            "mse": _scheme_experiment(tmp_path / "mse", data, "calibration:\n  scheme: mse\n")}
    enc: dict[tuple[str, str], dict[str, Any]] = {}
    paths: dict[str, dict[str, Path]] = {}
    for scheme, exp in exps.items():
        for precision in ("w8a8", "w8a4"):
            path, doc = _export(exp, precision, exp.parent / f"{precision}.onnx")
            enc[(scheme, precision)] = doc
            paths.setdefault(scheme, {})[precision] = path
            assert doc["quantizer_args"]["quant_scheme"] == scheme

    # min-max covers the outliers
    lo_mm, hi_mm, scale_mm = _x_range(enc[("minmax", "w8a8")])
    assert lo_mm <= x.min() + scale_mm and hi_mm >= x.max() - scale_mm and hi_mm - lo_mm >= 100
    # percentile: the 0.5 / 99.5 percentiles of the data (to a histogram bin, 2048 over the min-max range, and
    # a grid step), a range about a tenth of min-max's
    lo_p, hi_p, scale_p = _x_range(enc[("percentile", "w8a8")])
    tol = 2 * (float(x.max()) - float(x.min())) / 2048 + scale_p
    assert abs(lo_p - np.percentile(x, 0.5)) <= tol, (lo_p, np.percentile(x, 0.5))
    assert abs(hi_p - np.percentile(x, 99.5)) <= tol, (hi_p, np.percentile(x, 99.5))
    assert hi_p - lo_p < 0.2 * (hi_mm - lo_mm)
    # MSE at 4-bit activations: a narrower range than min-max that quantizes the data with less error
    lo_m4, hi_m4, _ = _x_range(enc[("minmax", "w8a4")])
    lo_e4, hi_e4, _ = _x_range(enc[("mse", "w8a4")])
    assert hi_e4 - lo_e4 < 0.8 * (hi_m4 - lo_m4), ((lo_e4, hi_e4), (lo_m4, hi_m4))
    assert _fake_quant_error(x, enc[("mse", "w8a4")]) < _fake_quant_error(x, enc[("minmax", "w8a4")])
    # weights are calibrated the same way whatever the activation scheme
    for scheme in ("percentile", "mse"):
        assert enc[(scheme, "w8a8")]["param_encodings"] == enc[("minmax", "w8a8")]["param_encodings"]
    # the simulation of either scheme is its export, bit for bit
    feeds = {"x": x[:32]}
    for scheme in ("percentile", "mse"):
        _assert_sim_equals_export(exps[scheme], paths[scheme], feeds)
