"""The experiment file: read once, validated completely, turned into frozen dataclasses.

Every mistake in the file becomes a :class:`~sweeper.errors.SweeperError` whose ``where`` is
``"<file>: <dotted.field>"`` and whose message says what was found and what is expected, on one line.
Code past :func:`load_experiment` trusts the :class:`Experiment` it gets. The parts: the dataclasses and
defaults (:mod:`sweeper.config.spec`), reading the YAML (:mod:`.yaml_file`), the sections
(:mod:`.sections`), single fields (:mod:`.fields`), paths and URIs (:mod:`.paths`).
"""

from __future__ import annotations

import os
from pathlib import Path

from sweeper.config.sections import experiment_from
from sweeper.config.spec import CalibrationSpec, DataSpec, Experiment, ModelSpec, QATSpec, WorkflowSpec
from sweeper.config.yaml_file import read_yaml


def load_experiment(path: str | os.PathLike[str]) -> Experiment:
    """Read and validate an experiment file; raise :class:`~sweeper.errors.SweeperError` on the first problem."""
    file = os.fspath(path)
    p = Path(file).expanduser()
    return experiment_from(read_yaml(p, file), file, p)


__all__ = ["CalibrationSpec", "DataSpec", "Experiment", "ModelSpec", "QATSpec", "WorkflowSpec", "load_experiment"]
