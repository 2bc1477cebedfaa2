"""Reading the experiment file: YAML 1.2 floats (``1e-3``), duplicate keys refused with both lines named, and
unreadable or invalid files as one-line :class:`~sweeper.errors.SweeperError` messages."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from sweeper.errors import SweeperError


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.2; PyYAML's 1.1 rules make it a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _check_duplicates(node: yaml.Node, file: str, prefix: str = "") -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            dotted = f"{prefix}{key}"
            if key is not None:
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise SweeperError(
                        f"{file}: {dotted}",
                        f"key {key!r} appears twice (lines {seen[key]} and {line}): expected each key once",
                    )
                seen[key] = line
            _check_duplicates(value_node, file, f"{dotted}.")
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicates(item, file, f"{prefix[:-1]}[{i}].")


def read_yaml(path: Path, file: str) -> Any:
    if not path.exists():
        raise SweeperError(file, "experiment file not found: expected an existing YAML file")
    if not path.is_file():
        raise SweeperError(file, "is not a file: expected a YAML experiment file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SweeperError(file, f"cannot read the experiment file ({type(exc).__name__}: {exc})") from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_duplicates(node, file)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise SweeperError(file, f"not valid YAML: {problem}{at}") from None
    finally:
        loader.dispose()
