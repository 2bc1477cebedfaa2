"""The published JSON Schema of the experiment file describes exactly the keys the validator accepts."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from sweeper.config import sections as cfg
from sweeper.config.schema import experiment_schema

ROOT = Path(__file__).resolve().parents[2]


def test_schema_keys_are_the_validators_keys() -> None:
    props = experiment_schema()["properties"]
    assert set(props) == set(cfg._TOP_KEYS)
    for key, section in [("model", cfg._MODEL_KEYS), ("data", cfg._DATA_KEYS), ("target", cfg._TARGET_KEYS),
                         ("calibration", cfg._CALIBRATION_KEYS), ("tracking", cfg._TRACKING_KEYS),
                         ("study", cfg._STUDY_KEYS), ("cost", cfg._COST_KEYS), ("workflow", cfg._WORKFLOW_KEYS)]:
        assert set(props[key]["properties"]) == set(section), key


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_bundled_experiments_validate(path: Path) -> None:
    jsonschema.validate(yaml.safe_load(path.read_text()), experiment_schema())


def test_schema_rejects_what_the_validator_rejects() -> None:
    doc = yaml.safe_load((ROOT / "experiments" / "mnist_cnn.yaml").read_text())
    for bad in ({**doc, "candidates": ["w3a8"]}, {**doc, "target": {"max_drop": -1}},
                {**doc, "workers": 0}, {**doc, "unknown_key": 1}, {**doc, "pool": "slurm"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, experiment_schema())
