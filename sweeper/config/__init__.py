"""The experiment file (YAML), validated at load time into frozen dataclasses."""

from sweeper.config.experiment import load_experiment
from sweeper.config.spec import CalibrationSpec, DataSpec, Experiment, ModelSpec
from sweeper.eval.metrics import BUILTIN_METRICS

__all__ = ["BUILTIN_METRICS", "CalibrationSpec", "DataSpec", "Experiment", "ModelSpec", "load_experiment"]
