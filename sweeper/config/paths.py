"""Path and URI checks of the experiment file: files relative to it, output folders that can be written, and
MLflow tracking URIs MLflow can use (also asked by the CLI before it starts anything)."""

from __future__ import annotations

import os
from pathlib import Path

from sweeper.config.fields import Ctx


def local_path(ctx: Ctx, text: str) -> Path:
    """``text`` as a normalised absolute path, relative to the experiment file's folder (``~`` expanded)."""
    p = Path(os.path.expanduser(text))
    if not p.is_absolute():
        p = ctx.folder / p
    return Path(os.path.normpath(p))


def existing_file(ctx: Ctx, text: str, field: str, what: str) -> Path:
    """``text`` as the path of an existing readable file (else the error names ``field`` and ``what`` it is)."""
    p = local_path(ctx, text)
    if not p.exists():
        raise ctx.error(field, f"{what} not found: {p} (relative paths are relative to {ctx.folder})")
    if not p.is_file() or not os.access(p, os.R_OK):
        raise ctx.error(field, f"{what} is not a readable file: {p}")
    return p


def writable_dir_problem(out: Path) -> str | None:
    """Why ``out`` (absolute) cannot be used as an output directory, or None: it must be a directory, or not
    exist yet under a writable directory."""
    if out.exists() and not out.is_dir():
        return f"{out} is a file: expected a directory (existing or to be created)"
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot create {out}: {parent} is a file, expected a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        what = "it is read-only" if parent == out else f"its nearest existing parent {parent} is read-only"
        return f"{out} is not writable ({what}): expected a writable directory"
    return None


TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "databricks-uc", "uc")
TRACKING_EXPECTED = "an MLflow tracking URI such as sqlite:///mlflow.db, postgresql://host/db or http://host:5000"


def tracking_uri_problem(uri: str) -> str | None:
    """Why MLflow could not use ``uri`` as sweeper's tracking store, or None. A bare folder (MLflow's file store,
    in maintenance mode since MLflow 3) and unknown schemes are refused; a SQLite file needs a folder that exists or
    can be created."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.split("+")[0] not in TRACKING_SCHEMES:
        return f"found {uri!r}: expected {TRACKING_EXPECTED}"
    if scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            return f"found {uri!r}: expected sqlite:///relative/file.db or sqlite:////absolute/file.db"
        db = Path(os.path.abspath(Path(rest[1:]).expanduser()))
        if db.is_dir():
            return f"found {uri!r}: {db} is a directory, expected a SQLite database file"
        problem = writable_dir_problem(db.parent)
        if problem:
            return f"found {uri!r}: the folder of the SQLite file cannot be used ({problem})"
    return None
