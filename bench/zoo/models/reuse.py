"""The four models of the real-model suite (:mod:`sweeper.examples.real`) as zoo entries, through their own
loaders (they cache under ``$SWEEPER_CACHE`` or ``~/.cache/sweeper``, not the zoo's folder) with the settings
of their experiment files."""

from __future__ import annotations

from pathlib import Path


def build_textcls(cache_dir: Path) -> dict:
    from sweeper.examples.real import textcls as m

    return dict(model=m.model_path(), calibration=m.calibration_data(), evaluation=m.evaluation_data(),
                metric="top1", max_drop=0.01, batch_size=64)


def build_layout(cache_dir: Path) -> dict:
    from sweeper.examples.real import layout as m

    return dict(model=m.model_path(), calibration=m.calibration_data(), evaluation=m.evaluation_data(),
                metric=m.detection_f1, max_drop=0.02, batch_size=4)


def build_digits_mobilenet(cache_dir: Path) -> dict:
    from sweeper.examples.real import digits_mobilenet as m

    return dict(model=m.model_path(), calibration=m.calibration_data(), evaluation=m.evaluation_data(),
                metric="top1", max_drop=0.01, batch_size=128)


def build_gru_wave(cache_dir: Path) -> dict:
    from sweeper.examples.real import gru_wave as m

    return dict(model=m.model_path(), calibration=m.calibration_data(), evaluation=m.evaluation_data(),
                metric=m.streaming_accuracy, max_drop=0.01, batch_size=128)
