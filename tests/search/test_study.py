"""The study storage survives several processes opening one fresh database at once (a sweep and its
monitor, or several drivers on a cluster sharing a storage)."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from sweeper.search.study import SweepStudy, open_storage


def _open_and_create(url: str) -> str:
    import optuna

    try:
        optuna.create_study(study_name="s", storage=open_storage(url), load_if_exists=True)
    except Exception as exc:  # noqa: BLE001 - reported back to the test
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def test_concurrent_processes_open_one_fresh_storage(tmp_path: Path) -> None:
    # 4 processes race on each of 5 fresh databases; without the retry this fails most times
    # with IntegrityError (alembic_version) or "database is locked"
    urls = [f"sqlite:///{tmp_path / f'{i}.db'}" for i in range(5) for _ in range(4)]
    with mp.get_context("fork").Pool(4) as pool:
        results = pool.map(_open_and_create, urls, chunksize=1)
    assert results == ["ok"] * len(urls), [r for r in results if r != "ok"]


def test_sweep_study_resumes_from_storage(tmp_path: Path) -> None:
    from sweeper.quant.precision import Precision
    from sweeper.quant.profile import Profile

    url = f"sqlite:///{tmp_path / 'study.db'}"
    w8a8 = Precision.parse("w8a8")
    first = SweepStudy(url, "e/baseline/x")
    profile = Profile.uniform(["g0", "g1"], w8a8)
    first.record(profile, 0.9, {"bops_ratio": 1.0})
    again = SweepStudy(url, "e/baseline/x")
    assert list(again.completed()) == [profile.key]
    assert again.completed()[profile.key]["bops_ratio"] == 1.0
    fresh = SweepStudy(url, "e/baseline/x", fresh=True)
    assert fresh.completed() == {}
