"""Every numeric option of every command is checked by the parser itself, before any work: nan, inf and values
out of range are one-line errors (argparse's exit 2), never accepted to fail later."""

from __future__ import annotations

import argparse

import pytest

from sweeper.cli import build_parser
from sweeper.cli.options import real, whole


def _options() -> list[tuple[str, argparse.Action]]:
    """(command, option) for every option of every subcommand."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [(name, action) for name, sp in sub.choices.items() for action in sp._actions if action.option_strings]


def test_no_option_takes_a_bare_float() -> None:
    bare = [(cmd, a.option_strings[0]) for cmd, a in _options() if a.type is float]
    assert bare == [], "use sweeper.cli.options.real: a bare float accepts nan and inf"


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "NaN", "1e400"])
def test_every_typed_option_refuses_non_finite_numbers(text: str) -> None:
    typed = [(cmd, a) for cmd, a in _options() if callable(a.type) and a.type not in (str,)]
    assert len(typed) >= 8  # workers, max-drop, latency-budget, trials, timeout, epochs, lr, batch-size, port...
    accepted = []
    for cmd, action in typed:
        try:
            action.type(text)  # type: ignore[misc]
            accepted.append(f"{cmd} {action.option_strings[0]}")
        except argparse.ArgumentTypeError as exc:
            assert repr(text) in str(exc), (cmd, action.option_strings[0], str(exc))
    assert accepted == [], f"options that accept {text!r}"


def test_real_and_whole_bounds() -> None:
    assert real(0)("0") == 0.0 and real(0, above=True)("0.5") == 0.5
    with pytest.raises(argparse.ArgumentTypeError, match="expected a number > 0"):
        real(0, above=True)("0")
    with pytest.raises(argparse.ArgumentTypeError, match="expected milliseconds > 0"):
        real(0, above=True, unit="milliseconds")("-1")
    assert whole(1, 3)("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match="between 1 and 3"):
        whole(1, 3)("4")
