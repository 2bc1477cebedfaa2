"""Checks of single fields of the experiment file, each failing with a :class:`~sweeper.errors.SweeperError`
whose ``where`` is ``"<file>: <dotted.field>"`` and whose message says what was found and what is expected."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sweeper.errors import SweeperError

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
IMPORT_PATH = re.compile(rf"^{IDENT}(\.{IDENT})*:{IDENT}(\.{IDENT})*$")


def describe(value: Any) -> str:
    """How a YAML value is shown in messages: the value and its YAML kind."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, (int, float)):
        return f"{value!r} (a number)"
    if isinstance(value, str):
        return f"{value!r} (a string)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{value!r} ({type(value).__name__})"


class Ctx:
    """Where errors point: the experiment file as given, and its folder for relative paths."""

    def __init__(self, file: str, folder: Path) -> None:
        self.file = file
        self.folder = folder

    def where(self, field: str) -> str:
        return f"{self.file}: {field}"

    def error(self, field: str, message: str) -> SweeperError:
        return SweeperError(self.where(field), message)


def mapping(ctx: Ctx, value: Any, field: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ctx.error(field, f"found {describe(value)}: expected a mapping with keys {', '.join(allowed)}")
    for key in value:
        if key not in allowed:
            dotted = f"{field}.{key}" if field else str(key)
            raise ctx.error(dotted, f"unknown key {key!r}: expected one of {', '.join(allowed)}")
    return value


def required(ctx: Ctx, section: Mapping[str, Any], key: str, field: str, hint: str) -> Any:
    if key not in section or section[key] is None:
        raise ctx.error(field, f"missing: expected {hint}")
    return section[key]


def string(ctx: Ctx, value: Any, field: str, expected: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ctx.error(field, f"found {describe(value)}: expected {expected}")
    return value.strip()


def boolean(ctx: Ctx, section: Mapping[str, Any], key: str, field: str, default: bool) -> bool:
    value = section.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ctx.error(field, f"found {describe(value)}: expected true or false")
    return value


def integer(ctx: Ctx, section: Mapping[str, Any], key: str, field: str, default: int | None, minimum: int) -> Any:
    value = section.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ctx.error(field, f"found {describe(value)}: expected {what}")
    return value


def number(ctx: Ctx, value: Any, field: str, expected: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ctx.error(field, f"found {describe(value)}: expected {expected}")
    return float(value)


def import_path(ctx: Ctx, text: str, field: str, expected: str) -> str:
    if not IMPORT_PATH.match(text):
        raise ctx.error(field, f"found {text!r}: expected {expected}")
    return text
