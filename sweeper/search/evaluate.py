"""The shared evaluation/logging path every strategy uses: evaluate profiles on the pool, cost them,
export them, and log one MLflow child run each."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from sweeper.cost.bops import profile_cost
from sweeper.export.encodings_io import save_export, write_encodings
from sweeper.export.qdq import export_qdq
from sweeper.pipeline import Workspace
from sweeper.quant.profile import Profile
from sweeper.tracking.tracker import Tracker


@dataclass
class Evaluated:
    name: str
    profile_key: str
    metric: float
    drop: float
    meets_target: bool
    bops_ratio: float
    size_mb: float
    eval_seconds: float
    onnx: str | None = None
    encodings: str | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def progress(total: int, desc: str):  # noqa: ANN201 - tqdm or a no-op
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="profile", disable=not sys.stderr.isatty(), leave=False)


def evaluate_profiles(ws: Workspace, pool, profiles: dict[str, Profile], step: str, out_dir: Path,  # noqa: ANN001
                      tracker: Tracker | None, export: bool = True) -> dict[str, Evaluated]:
    """Evaluate named profiles in parallel; export each to ``out_dir/<name>.onnx`` + ``.encodings``."""
    by_key = {p.key: name for name, p in profiles.items()}
    results: dict[str, Evaluated] = {}
    bar = progress(len(profiles), step)
    best = None
    for res in pool.map_unordered(profiles.values()):
        name = by_key[res.profile.key]
        cost = profile_cost(ws.graph, res.profile)
        drop = ws.drop(res.metric)
        ev = Evaluated(name=name, profile_key=res.profile.key, metric=res.metric, drop=drop,
                       meets_target=drop <= ws.exp.max_drop, bops_ratio=cost.bops_ratio, size_mb=cost.size_mb,
                       eval_seconds=res.eval_seconds)
        artifacts = {}
        if export:
            model = export_qdq(ws.graph, ws.table, res.profile)
            doc = ws.table.to_aimet(res.profile)
            onnx_path, enc_path = out_dir / f"{name}.onnx", out_dir / f"{name}.encodings"
            save_export(model, doc, onnx_path, enc_path)
            ev.onnx, ev.encodings = str(onnx_path), str(enc_path)
            artifacts = {"onnx": onnx_path, "encodings": enc_path}
        if tracker is not None:
            tracker.log_profile(
                name,
                params={"step": step, "precision": name, "calibration_scheme": ws.exp.calibration.scheme,
                        **{f"groups_{k}": v for k, v in res.profile.counts().items()}},
                metrics={"metric": ev.metric, "drop": ev.drop, "bops_ratio": ev.bops_ratio,
                         "size_mb": ev.size_mb, "eval_seconds": ev.eval_seconds},
                tags={"sweeper.profile_hash": res.profile.key, "sweeper.strategy": step},
                artifacts=artifacts, assignment=res.profile.to_json(),
            )
        results[name] = ev
        if best is None or ev.metric > best:
            best = ev.metric
        bar.set_postfix(best=f"{best:.4f}")
        bar.update(1)
    bar.close()
    return results


def write_json(path: Path, doc: object) -> None:
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")


__all__ = ["Evaluated", "evaluate_profiles", "progress", "write_encodings", "write_json"]
