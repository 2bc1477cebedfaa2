"""Batch runs of many models: the whole workflow (``sweeper run``, :mod:`sweeper.search.workflow`) for each
experiment file over one shared Ray runtime; one model failing does not stop the others, and its error is
reported in the summary."""

from __future__ import annotations

import contextlib
import json
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sweeper.errors import SweeperError


@dataclass
class BatchRow:
    experiment: str
    file: str
    fp32_metric: float | None = None
    chosen: str | None = None  # the accepted profile
    step: str | None = None  # the step that produced it
    stopped_at: str | None = None
    metric: float | None = None
    drop: float | None = None
    bops_ratio: float | None = None
    est_latency_ms: float | None = None
    error: str | None = None


def experiment_files(paths: list[str]) -> list[Path]:
    """A folder's *.yaml files, or the files given."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(list(p.glob("*.yaml")) + list(p.glob("*.yml"))))
        elif p.is_file():
            files.append(p)
        else:
            raise SweeperError(str(p), "no such experiment file or folder")
    if not files:
        raise SweeperError(", ".join(paths), "no experiment files (*.yaml) found")
    return files


def run_batch(files: list[Path], open_session: Callable[..., Any], *, pool_kind: str | None, workers: int | None,
              address: str | None, tracking: bool, output: Path | None = None) -> list[BatchRow]:
    """The workflow on every experiment file, one after the other, their workers on one Ray runtime.
    ``open_session(exp, tracking=, pool=, workers=, address=)`` prepares one model (the face's
    :class:`sweeper.api.Session`, handed down so that this layer imports nothing above it)."""
    from sweeper.cluster.runtime import ray_runtime

    rows: list[BatchRow] = []
    with ray_runtime(address) if pool_kind != "local" else contextlib.nullcontext():
        for f in files:
            rows.append(_run_one(f, open_session, pool_kind, workers, address, tracking, output))
    return rows


def _run_one(f: Path, open_session: Callable[..., Any], pool_kind: str | None, workers: int | None,
             address: str | None, tracking: bool, output: Path | None) -> BatchRow:
    """One model's workflow as a summary row (its error in the row, not raised)."""
    import dataclasses

    from sweeper.config.experiment import load_experiment

    row = BatchRow(experiment=f.stem, file=str(f))
    try:
        exp = load_experiment(f)
        row.experiment = exp.name
        if output is not None:
            exp = dataclasses.replace(exp, output=output / exp.name)
        with open_session(exp, tracking=tracking, pool=pool_kind, workers=workers, address=address) as s:
            rep = s.run()
            row.fp32_metric, row.stopped_at = s.ws.fp32_metric, rep.stopped_at
            a = rep.accepted
            if a is not None:
                row.chosen, row.step, row.metric, row.drop = a.profile, a.step, a.metric, a.drop
                row.bops_ratio, row.est_latency_ms = a.bops_ratio, a.est_latency_ms
    except SweeperError as exc:
        row.error = str(exc)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - one model failing must not stop the others
        last = traceback.extract_tb(exc.__traceback__)[-1]
        row.error = f"{type(exc).__name__}: {exc} ({Path(last.filename).name}:{last.lineno})"
    return row


def format_summary(rows: list[BatchRow]) -> str:
    head = (f"{'model':<16} {'fp32':>8} {'accepted':>24} {'from step':>16} {'metric':>8} {'drop':>8} "
            f"{'BOPs x':>7} {'est ms':>9}  error")
    lines = [head, "-" * len(head)]

    def f(v: float | None, fmt: str) -> str:
        return format(v, fmt) if v is not None else "-"

    for r in rows:
        lines.append(f"{r.experiment:<16} {f(r.fp32_metric, '8.4f')} {(r.chosen or '-')[:24]:>24} "
                     f"{(r.step or '-')[:16]:>16} {f(r.metric, '8.4f')} {f(r.drop, '8.4f')} "
                     f"{f(r.bops_ratio, '7.3f')} {f(r.est_latency_ms, '9.4f')}  {r.error or ''}")
    return "\n".join(lines)


def write_summary(rows: list[BatchRow], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    tmp.replace(path)


def log_summary(rows: list[BatchRow], summary_path: Path, uri: str | None) -> str:
    from sweeper.tracking.tracker import Tracker

    tracker = Tracker("sweeper-batch", uri)
    tracker.start_step("batch", {"experiments": ",".join(r.experiment for r in rows),
                                 "failed": sum(1 for r in rows if r.error)})
    run_id = tracker.parent_id or ""
    tracker.end_step({"models": float(len(rows)), "failed": float(sum(1 for r in rows if r.error))},
                     [summary_path])
    return run_id
