"""Parity with aimet-onnx 2.42 at low bit widths on the MNIST example (figures measured with
bench/aimet_parity.py in aimet-onnx's own venv; the test cannot import aimet)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sweeper.config.experiment import load_experiment
from sweeper.config.spec import CalibrationSpec
from sweeper.pipeline import Workspace
from sweeper.quant.precision import Precision
from sweeper.search.baseline import run_baseline

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e
AIMET_SIM = {"w8a8": 0.9416, "w4a8": 0.9448, "w4a4": 0.9325, "w2a8": 0.8761}  # float biases, as AIMET's sim
AIMET_INT32_EXPORT = {"w8a8": 0.9409, "w4a8": 0.9442, "w4a4": 0.9273}  # AIMET's QDQ export, int32 biases


@pytest.mark.parametrize("bias", ["float", "int32"])
def test_low_bit_metrics_match_aimet_within_0_3_points(tmp_path: Path, bias: str) -> None:
    exp = load_experiment(ROOT / "experiments" / "mnist_cnn.yaml")
    exp = dataclasses.replace(exp, pool="local", workers=1, output=tmp_path / "out",
                              candidates=tuple(Precision.parse(p) for p in AIMET_SIM),
                              calibration=CalibrationSpec(bias=bias),
                              early_stop=False)  # the failing candidates' full metrics are compared too
    ws = Workspace(exp)
    pool = ws.pool()
    try:
        rows = {r.name: r.metric for r in run_baseline(ws, pool, None).rows}
    finally:
        pool.close()
        ws.close()
    reference = AIMET_SIM if bias == "float" else AIMET_INT32_EXPORT
    for prec, aimet in reference.items():
        assert abs(rows[prec] - aimet) <= 0.003, (prec, rows[prec], aimet)
