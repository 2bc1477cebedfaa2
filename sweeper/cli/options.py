"""The command line's argument types and checks: every option is parsed and validated here, before any work
starts, so bad input is one line (what, where, what was expected) and exit code 2."""

from __future__ import annotations

import argparse
import math
import socket
from collections.abc import Callable
from typing import Any, NoReturn

from sweeper.errors import SweeperError


class Parser(argparse.ArgumentParser):
    """argparse with sweeper's error format: one line (what, where, expected), exit code 2, no usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"sweeper: error: {message} (`{self.prog} --help` lists the options)\n")


def whole(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number in [minimum, maximum]; anything else is a one-line error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            raise argparse.ArgumentTypeError(f"found {text!r}: expected a whole number {bounds}")
        return value

    return parse


def real(minimum: float, *, above: bool = False, unit: str = "") -> Callable[[str], float]:
    """An argparse type: a finite number >= minimum (> minimum when ``above``); nan and inf are refused."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < minimum or (above and value == minimum):
            what = f"{unit} " if unit else "a number "
            raise argparse.ArgumentTypeError(f"found {text!r}: expected {what}{'>' if above else '>='} {minimum:g}")
        return value

    return parse


def precision_arg(text: str, flag: str) -> Any:
    """A precision name (``w8a8``, ``fp16``...) as a :class:`~sweeper.quant.precision.Precision`."""
    from sweeper.quant.precision import Precision

    try:
        return Precision.parse(text)
    except ValueError as exc:
        raise SweeperError(flag, str(exc)) from None


def percentages(text: str, flag: str = "--k") -> tuple[float, ...]:
    """``"0,5,10"`` -> ``(0.0, 5.0, 10.0)``, each in [0, 100]."""
    try:
        ks = tuple(float(k) for k in text.split(","))
    except ValueError:
        raise SweeperError(flag, f"found {text!r}: expected comma-separated percentages, e.g. 0,5,10") from None
    if any(not 0 <= k <= 100 for k in ks):  # nan fails both comparisons, so it is refused too
        raise SweeperError(flag, f"found {text!r}: expected percentages between 0 and 100")
    return ks


def amp_candidates(text: str | None) -> list[Any] | None:
    """``--candidates``: at least two precisions, or None for the experiment's."""
    if not text:
        return None
    cands = [precision_arg(c.strip(), "--candidates") for c in text.split(",") if c.strip()]
    if len(cands) < 2:
        raise SweeperError("--candidates", "expected at least two precisions, e.g. w4a8,w8a8,fp16")
    return cands


class NotForExport(argparse.Action):
    """An option of the other commands that ``export`` would ignore: rejected, with the reason."""

    def __init__(self, option_strings: list[str], dest: str, why: str, nargs: int | str = 0, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=nargs, help=argparse.SUPPRESS, **kw)
        self.why = why

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        parser.error(f"argument {option_string}: not an option of export ({self.why})")


def check_address(text: str) -> None:
    """``--address``: ``auto``, or host:port / ray://host:port of a running Ray head that accepts a connection
    (checked before any work: Ray itself waits for an unreachable head forever)."""
    if text == "auto":
        return
    host, sep, port = text.removeprefix("ray://").rpartition(":")
    expected = "expected auto, HOST:PORT or ray://HOST:PORT of a running Ray head (`ray start --head` prints it)"
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SweeperError("--address", f"found {text!r}: {expected}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SweeperError("--address", f"no Ray head answers at {host}:{port} ({reason}): {expected}") from None


def check_pool_arguments(args: argparse.Namespace) -> None:
    """Check --address (and that it goes with a Ray pool) before any work."""
    if getattr(args, "address", None):
        if getattr(args, "pool", None) == "local":
            raise SweeperError("--address", "joins a Ray cluster: expected --pool ray (or no --pool), not --pool local")
        check_address(args.address)


def free_port(port: int) -> None:
    """``--port`` of ``sweeper ui``: free on 127.0.0.1."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise SweeperError("--port", f"{port} is not free on 127.0.0.1 ({exc.strerror}): expected a free port, "
                                         f"e.g. --port {port + 1}") from None


__all__ = ["NotForExport", "Parser", "amp_candidates", "check_address", "check_pool_arguments", "free_port",
           "percentages", "precision_arg", "real", "whole"]
