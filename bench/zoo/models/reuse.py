"""The four models of the real-model suite (:mod:`sweeper.examples.real`) as zoo entries, through their own
loaders (they cache under ``$SWEEPER_CACHE`` or ``~/.cache/sweeper``, not the zoo's folder), with the metric,
target and batch size of their experiment files (``experiments/<name>.yaml``, read here: one definition)."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

EXPERIMENTS = Path(__file__).resolve().parents[3] / "experiments"


def _suite(name: str, module: str) -> dict:
    """``sweeper.experiment`` arguments of suite model ``name``: its loaders' data, its file's settings."""
    from sweeper.model.intake import resolve_callable

    doc = yaml.safe_load((EXPERIMENTS / f"{name}.yaml").read_text())
    metric = doc["metric"]
    m = importlib.import_module(module)
    return dict(model=m.model_path(), calibration=m.calibration_data(), evaluation=m.evaluation_data(),
                metric=resolve_callable(metric, "metric") if ":" in metric else metric,
                max_drop=float(doc["target"]["max_drop"]), batch_size=int(doc["batch_size"]))


def build_textcls(cache_dir: Path) -> dict:
    return _suite("real_textcls", "sweeper.examples.real.textcls")


def build_layout(cache_dir: Path) -> dict:
    return _suite("real_layout", "sweeper.examples.real.layout")


def build_digits_mobilenet(cache_dir: Path) -> dict:
    return _suite("digits_mobilenet", "sweeper.examples.real.digits_mobilenet")


def build_gru_wave(cache_dir: Path) -> dict:
    return _suite("gru_wave", "sweeper.examples.real.gru_wave")
