"""User-facing errors: one clear line, exit code 2, no traceback."""

from __future__ import annotations


class SweeperError(Exception):
    """A problem with the user's input (file, field, value). The CLI prints ``str(err)`` and exits 2."""

    exit_code = 2

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message
