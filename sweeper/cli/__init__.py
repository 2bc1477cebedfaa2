"""The ``sweeper`` command line, a thin layer over :mod:`sweeper.api`.

``options`` parses and checks every argument before any work starts; ``steps`` holds one entry per workflow
step (its options, how it runs on a Session, what it prints); ``commands`` builds the parser and runs the
commands (``run``, the steps, ``batch``, ``export``, ``schema``, ``ui``).
"""

from __future__ import annotations

from sweeper.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
