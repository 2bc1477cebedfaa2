"""The experiment file (YAML), validated at load time into frozen dataclasses."""

from sweeper.config.experiment import (
    BUILTIN_METRICS,
    CalibrationSpec,
    DataSpec,
    Experiment,
    ModelSpec,
    load_experiment,
)

__all__ = ["BUILTIN_METRICS", "CalibrationSpec", "DataSpec", "Experiment", "ModelSpec", "load_experiment"]
