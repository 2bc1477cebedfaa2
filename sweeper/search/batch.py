"""Batch evaluation of many models: Step 1 for each experiment file over one shared Ray runtime; one
model failing does not stop the others, and its error is reported in the summary."""

from __future__ import annotations

import json
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from sweeper.errors import SweeperError


@dataclass
class BatchRow:
    experiment: str
    file: str
    fp32_metric: float | None = None
    chosen: str | None = None
    metric: float | None = None
    drop: float | None = None
    est_latency_ms: float | None = None
    size_mb: float | None = None
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


def run_batch(files: list[Path], *, pool_kind: str | None, workers: int | None, address: str | None,
              tracking: bool, output: Path | None = None) -> list[BatchRow]:
    from sweeper.cluster.pool import ray_runtime
    from sweeper.config.experiment import load_experiment
    from sweeper.pipeline import Workspace
    from sweeper.search.baseline import run_baseline
    from sweeper.tracking.tracker import Tracker

    rows: list[BatchRow] = []
    with ray_runtime(address) if pool_kind != "local" else _nullcontext():
        for f in files:
            row = BatchRow(experiment=f.stem, file=str(f))
            ws = None
            pool = None
            try:
                exp = load_experiment(f)
                row.experiment = exp.name
                if output is not None:
                    exp = exp.__class__(**{**exp.__dict__, "output": output / exp.name})
                ws = Workspace(exp)
                pool = ws.pool(pool_kind, workers)
                tracker = Tracker(exp.name, exp.tracking_uri) if tracking else None
                rep = run_baseline(ws, pool, tracker)
                row.fp32_metric = rep.fp32_metric
                row.chosen = rep.chosen
                chosen = next((r for r in rep.rows if r.name == rep.chosen), None)
                if chosen is not None:
                    row.metric, row.drop = chosen.metric, chosen.drop
                    row.est_latency_ms, row.size_mb = chosen.est_latency_ms, chosen.size_mb
            except SweeperError as exc:
                row.error = str(exc)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - one model failing must not stop the others
                last = traceback.extract_tb(exc.__traceback__)[-1]
                row.error = f"{type(exc).__name__}: {exc} ({Path(last.filename).name}:{last.lineno})"
            finally:
                if pool is not None:
                    pool.close()
                if ws is not None:
                    ws.close()
            rows.append(row)
    return rows


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def format_summary(rows: list[BatchRow]) -> str:
    head = f"{'model':<16} {'fp32':>8} {'chosen':>8} {'metric':>8} {'drop':>8} {'est ms':>9} {'size MB':>8}  error"
    lines = [head, "-" * len(head)]

    def f(v: float | None, fmt: str) -> str:
        return format(v, fmt) if v is not None else "-"

    for r in rows:
        lines.append(f"{r.experiment:<16} {f(r.fp32_metric, '8.4f')} {r.chosen or '-':>8} {f(r.metric, '8.4f')} "
                     f"{f(r.drop, '8.4f')} {f(r.est_latency_ms, '9.4f')} {f(r.size_mb, '8.3f')}  {r.error or ''}")
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
