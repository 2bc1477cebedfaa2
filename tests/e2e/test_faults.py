"""Faults lose no results: a worker killed mid-sweep, a driver interrupted with SIGINT, the pool closed under
running calls (real Ray, MLflow, Optuna storage; the MNIST example on a tiled evaluation set so a sweep lasts a
few seconds). Tests that start Ray in the test process are marked ``isolated`` (tests/conftest.py): they run in
a child pytest, so a Ray runtime dying with its process cannot take the test runner down."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e
ALL = [f"w{w}a{a}" for w in (2, 4, 8, 16) for a in (2, 4, 8, 16)] + ["fp16"]


def _experiment(tmp: Path, tile: int = 3) -> Path:
    from sweeper.examples import mnist

    cal, ev = mnist.calibration_data(), mnist.evaluation_data()
    np.savez(tmp / "cal.npz", **cal)
    np.savez(tmp / "eval.npz", input=np.tile(ev["input"], (tile, 1, 1, 1)), labels=np.tile(ev["labels"], tile))
    exp = tmp / "exp.yaml"
    exp.write_text(f"""name: faults
model:
  torch: sweeper.examples.mnist:make_model
data:
  calibration: cal.npz
  evaluation: eval.npz
metric: top1
batch_size: 512
target:
  max_drop: 0.005
  early_stop: false  # every evaluation runs in full: a sweep long enough to interrupt mid-way
candidates: [{", ".join(ALL)}]
workers: 2
output: {tmp / "out"}
tracking:
  uri: sqlite:///{tmp / "mlflow.db"}
""")
    return exp


def _child_runs(tmp: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    exp = client.get_experiment_by_name("faults")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags]


@pytest.mark.isolated
def test_killed_worker_is_replaced_and_its_profile_reevaluated(tmp_path: Path) -> None:
    from sweeper.config.experiment import load_experiment
    from sweeper.pipeline import Workspace
    from sweeper.search.baseline import run_baseline
    from sweeper.tracking.tracker import Tracker

    exp = load_experiment(_experiment(tmp_path))
    ws = Workspace(exp)
    pool = ws.pool()
    killed: list[int] = []

    class KillAfterFirst:
        """The real Ray pool; after the first result, SIGKILL one worker's process."""

        size = pool.size

        def map_unordered(self, profiles, reference=None, target=None):  # noqa: ANN001, ANN202
            for i, res in enumerate(pool.map_unordered(profiles, reference, target)):
                if i == 0:
                    pid = pool.started().worker_pids()[0]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                yield res

        def close(self) -> None:
            pool.close()

    tracker = Tracker(exp.name, exp.tracking_uri)
    try:
        rep = run_baseline(ws, KillAfterFirst(), tracker)
        replaced = pool.started().replaced
    finally:
        pool.close()
        ws.close()
    assert killed and replaced >= 1
    assert sorted(r.name for r in rep.rows) == sorted(ALL)
    counts = Counter(r.data.tags["sweeper.profile_hash"] for r in _child_runs(tmp_path))
    assert len(counts) == len(ALL) and set(counts.values()) == {1}


def _completed_trials(db: Path) -> int:
    """Finished trials in a study database (complete, or pruned: evaluations that stopped early), read without
    writing (never races the driver's schema creation)."""
    if not db.exists():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as con:
            return int(con.execute("SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')").fetchone()[0])
    except sqlite3.Error:  # the driver is creating the schema right now
        return 0


def test_interrupted_sweep_resumes_without_duplicates(tmp_path: Path) -> None:
    import optuna

    exp = _experiment(tmp_path, tile=8)  # about 1 s per evaluation: time to interrupt mid-sweep
    cmd = [sys.executable, "-m", "sweeper", "baseline", str(exp)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    storage = f"sqlite:///{tmp_path / 'out' / 'study.db'}"
    deadline = time.monotonic() + 240
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        done = _completed_trials(tmp_path / "out" / "study.db")
        if done >= 2:
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    assert done >= 2, err[-2000:]
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err
    first = _child_runs(tmp_path)
    assert len(first) < len(ALL)
    assert max(Counter(r.data.tags["sweeper.profile_hash"] for r in first).values()) == 1
    assert not (tmp_path / "out" / "baseline").exists()  # nothing half-written

    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "(resumed)" in res.stdout
    runs = _child_runs(tmp_path)
    counts = Counter(r.data.tags["sweeper.profile_hash"] for r in runs)
    assert len(counts) == len(ALL) and set(counts.values()) == {1}
    parents = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert len(parents) == 1  # the rerun continued the same parent run
    study = optuna.load_study(study_name=optuna.get_all_study_summaries(storage)[0].study_name, storage=storage)
    keys = [t.user_attrs["sweeper"]["profile_key"] for t in study.trials]
    assert len(keys) == len(set(keys)) == len(ALL)


@pytest.mark.isolated
def test_closing_the_pool_under_a_running_call_ends_that_call(tmp_path: Path) -> None:
    """A call running in another thread (an AMP plot drawn on a worker) when the pool closes (the step
    failed, Ctrl-C) ends with an error instead of waiting forever for workers that are gone."""
    import threading

    from sweeper.cluster.protocol import PoolClosed
    from sweeper.config.experiment import load_experiment
    from sweeper.pipeline import Workspace
    from sweeper.quant.profile import Profile

    ws = Workspace(load_experiment(_experiment(tmp_path, tile=8)))  # about 1 s per evaluation
    pool = ws.pool("ray", 1)
    profile = Profile.uniform([g.name for g in ws.graph.groups], "w8a8").to_json()
    errors: list[BaseException] = []

    def evaluate_three() -> None:
        try:
            list(pool.map_calls("evaluate", [(profile,)] * 3))
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)

    pool.started()
    thread = threading.Thread(target=evaluate_three, daemon=True)
    thread.start()
    time.sleep(1.5)
    pool.close()
    thread.join(timeout=60)
    ws.close()
    assert not thread.is_alive() and errors
    assert isinstance(errors[0], PoolClosed), repr(errors[0])


def _session_processes(session: str) -> list[str]:
    """Command lines of live processes that name a Ray session directory (what a runtime left behind)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                fds = [os.readlink(f) for f in (entry / "fd").iterdir()] if session not in cmd else []
            except OSError:
                continue
            if session in cmd or any(session in f for f in fds):
                found.append(f"{entry.name} {cmd[:120]}")
    return found


@pytest.mark.isolated
def test_closing_the_pool_under_calls_in_other_threads_keeps_the_process(tmp_path: Path) -> None:
    """Three threads keep calling the workers while the main thread closes the pool (Ctrl-C during AMP while a
    plot is drawn and latency measured on workers). Ray's core worker ends the whole process (exit status 1,
    nothing printed) when a thread calls into it while or after Ray shuts down, and a Ray call after the
    shutdown started a second runtime nobody stopped. Now every call ends with PoolClosed, the process goes
    on, Ray is shut down and nothing of it is left running."""
    import threading

    import ray

    from sweeper.cluster.protocol import PoolClosed
    from sweeper.config.experiment import load_experiment
    from sweeper.pipeline import Workspace

    ws = Workspace(load_experiment(_experiment(tmp_path, tile=1)))
    pool = ws.pool("ray", 2)
    pool.started()
    session = ray._private.worker._global_node.get_session_dir_path()
    done = [0, 0, 0]
    ended: dict[int, list[BaseException]] = {0: [], 1: [], 2: []}

    def hammer(k: int) -> None:
        """Calls the workers until the pool says it is closed; goes on after any other error (as a search
        asking for its next profiles does), at most 20 times."""
        while len(ended[k]) < 20:
            try:
                for _ in pool.map_calls("pid", [()] * 8):
                    done[k] += 1
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                ended[k].append(exc)
                if isinstance(exc, PoolClosed) or not isinstance(exc, Exception):
                    return

    threads = [threading.Thread(target=hammer, args=(k,), daemon=True) for k in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while min(done) < 20 and time.monotonic() < deadline and all(t.is_alive() for t in threads):
        time.sleep(0.05)
    assert min(done) >= 20, (done, ended)  # every thread is busy calling the workers
    pool.close()
    for t in threads:
        t.join(timeout=60)
    ws.close()
    assert not any(t.is_alive() for t in threads)
    assert all(len(e) == 1 and isinstance(e[0], PoolClosed) for e in ended.values()), ended
    assert not ray.is_initialized()  # shut down, and no later call started another runtime
    deadline = time.monotonic() + 30  # Ray's processes exit asynchronously after shutdown
    while (left := _session_processes(session)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, left


@pytest.mark.isolated
def test_a_call_after_the_pool_closed_fails_and_starts_nothing(tmp_path: Path) -> None:
    """A thread that asks the pool for work once it is closed (an AMP plot submitted while Ctrl-C closes the
    pool) gets PoolClosed at once: before, the lazy pool started a second pool and a second Ray runtime that
    nobody stopped."""
    import ray

    from sweeper.cluster.protocol import PoolClosed
    from sweeper.config.experiment import load_experiment
    from sweeper.pipeline import Workspace

    ws = Workspace(load_experiment(_experiment(tmp_path, tile=1)))
    pool = ws.pool("ray", 1)
    assert [out for _, out in pool.map_calls("pid", [()])]  # the pool ran
    pool.close()
    with pytest.raises(PoolClosed):
        list(pool.map_calls("pid", [()]))
    ws.close()
    assert not ray.is_initialized()
