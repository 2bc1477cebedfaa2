"""User-facing errors: one clear line, exit code 2, no traceback."""

from __future__ import annotations


class SweeperError(Exception):
    """A problem with the user's input (file, field, value). The CLI prints ``str(err)`` and exits 2."""

    exit_code = 2

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message

    def __reduce__(self) -> tuple[type[SweeperError], tuple[str, str]]:
        """Pickled with both arguments: an error raised in a Ray worker reaches the driver as itself (by default
        Exception pickles ``args``, one string, and Ray could not rebuild it: the driver got an
        UnserializableException instead of the one line)."""
        return (type(self), (self.where, self.message))
