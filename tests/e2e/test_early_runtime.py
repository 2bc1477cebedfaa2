"""The local Ray runtime starts while the model is prepared (``cluster.runtime.start_runtime_early``): a Session
with a Ray pool starts it in the background, the first pool adopts it and shuts it down, and a runtime that
no pool took is stopped too, with every process it spawned."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from pathlib import Path

import pytest

import sweeper
from sweeper.cluster import runtime as runtime_mod
from sweeper.config.experiment import load_experiment

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def _children() -> list[int]:
    """PIDs of this process's live children (from /proc; Ray's GCS, raylet and workers are among them)."""
    me, kids = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == me and fields[0] != "Z":
            kids.append(int(entry))
    return kids


def _gone(deadline: float = 20.0) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if not _children() and not any(t.name == "sweeper-ray-start" for t in threading.enumerate()):
            return True
        time.sleep(0.2)
    return False


def _session(tmp_path: Path) -> sweeper.Session:
    exp = load_experiment(ROOT / "experiments" / "mnist_cnn.yaml")
    exp = dataclasses.replace(exp, output=tmp_path / "out", pool="ray", workers=1,
                              candidates=tuple(c for c in exp.candidates if c.name == "w8a8"))
    return sweeper.Session(exp, tracking=False)


@pytest.mark.isolated
def test_session_starts_ray_while_preparing_and_its_pool_adopts_and_stops_it(tmp_path: Path) -> None:
    import ray

    with _session(tmp_path) as s:
        assert runtime_mod._EARLY is not None  # started in the background, not yet taken by a pool
        assert runtime_mod._EARLY.wait() and ray.is_initialized() and _children()
        rows = {r.name: r.metric for r in s.baseline().rows}
        assert runtime_mod._EARLY is None  # the pool took it
        assert rows["w8a8"] > 0.9
    assert not ray.is_initialized()
    assert _gone(), f"left behind: {_children()}"


@pytest.mark.isolated
def test_a_runtime_no_pool_took_is_stopped_with_its_processes() -> None:
    import ray

    runtime_mod.start_runtime_early(1)
    assert runtime_mod._EARLY is not None and runtime_mod._EARLY.wait() and ray.is_initialized()
    assert _children()
    runtime_mod.release_early_runtime()
    assert not ray.is_initialized() and runtime_mod._EARLY is None
    assert _gone(), f"left behind: {_children()}"
