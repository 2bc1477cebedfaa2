"""``sweeper schema`` as a command: it prints a valid JSON Schema (Draft 2020-12) that accepts every bundled
experiment file and the documentation's annotated example, and rejects what the experiment loader rejects. In
process, well under a second."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
jsonschema = pytest.importorskip("jsonschema")


@pytest.fixture(scope="module")
def printed_schema() -> dict[str, Any]:
    import contextlib
    import io

    from sweeper.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["schema"]) == 0
    return json.loads(out.getvalue())


def _documented_example() -> dict[str, Any]:
    """The annotated experiment file of the documentation (every section and key): the first YAML block of
    docs/experiment-file.md (or, in older trees, README.md) that is a whole experiment file."""
    for page in (ROOT / "docs" / "experiment-file.md", ROOT / "README.md"):
        if not page.is_file():
            continue
        for block in re.findall(r"```yaml\n(.*?)```", page.read_text(), re.S):
            if re.search(r"^name:", block, re.M) and re.search(r"^workflow:", block, re.M):
                doc = yaml.safe_load(block)
                assert isinstance(doc, dict)
                return doc
    raise AssertionError("no annotated experiment file in docs/experiment-file.md or README.md")


def test_schema_command_prints_a_valid_json_schema(printed_schema: dict[str, Any]) -> None:
    validator = jsonschema.validators.validator_for(printed_schema)
    validator.check_schema(printed_schema)  # a schema by its own meta-schema
    assert printed_schema["type"] == "object" and printed_schema.get("additionalProperties") is False
    assert {"name", "model", "data", "metric", "target"} <= set(printed_schema.get("required", []))
    props = printed_schema["properties"]
    assert {"calibration", "tracking", "workflow", "candidates", "cost"} <= set(props)
    assert set(props["calibration"]["properties"]) >= {"scheme", "percentile", "act_symmetric", "per_channel"}
    assert set(props["workflow"]["properties"]) >= {"adaround_precision", "qat_profile"}


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_printed_schema_accepts_the_bundled_experiments(printed_schema: dict[str, Any], path: Path) -> None:
    jsonschema.validate(yaml.safe_load(path.read_text()), printed_schema)


def test_printed_schema_accepts_the_documented_example_and_rejects_mistakes(printed_schema: dict[str, Any]
                                                                           ) -> None:
    doc = _documented_example()
    assert {"calibration", "tracking", "workflow", "study", "cost"} <= set(doc)
    jsonschema.validate(doc, printed_schema)

    def mutated(path: str, value: Any) -> dict[str, Any]:
        bad = copy.deepcopy(doc)
        *parents, key = path.split(".")
        node = bad
        for p in parents:
            node = node[p]
        node[key] = value
        return bad

    for path, value in [("candidates", ["w3a8"]), ("target.max_drop", -0.1), ("workers", 0), ("pool", "slurm"),
                        ("calibration.scheme", "entropy"), ("calibration.percentile", 150),
                        ("calibration.act_symmetric", "yes"), ("tracking.artifacts", "some"),
                        ("workflow.adaround_precision", "w3a8"), ("workflow.qat_profile", "w4"),
                        ("unknown_key", 1), ("calibration.typo", 1)]:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(mutated(path, value), printed_schema)
