"""`sweeper ui` serves the project's MLflow store on 127.0.0.1 with a real `mlflow server`; it stops every
process it started when it is signalled; and the experiment opens, in a real headless Chromium, on its runs
as a model-training experiment (not MLflow 3's GenAI overview). Every process is started and stopped by PID."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1600,900"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "MLFLOW_DISABLE_TELEMETRY": "true"}


def _start_ui(uri: str, port: int, cwd: Path) -> tuple[subprocess.Popen[bytes], Path]:
    log = cwd / f"ui-{port}.log"
    with log.open("wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "sweeper", "ui", "--uri", uri, "--port", str(port)], cwd=cwd,
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True, env=_env())
    return proc, log


def _wait_for(url: str, proc: subprocess.Popen[bytes], log: Path, seconds: float = 240) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"sweeper ui exited early:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.read().decode()
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {seconds:.0f} s:\n{log.read_text()[-3000:]}")


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) from /proc, None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = text[text.rindex(")") + 2:].split()
    return f[0], int(f[1]), int(f[2])


def _running(pid: int) -> bool:
    st = _proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def _tree(root: int) -> dict[int, str]:
    """pid -> command line of ``root`` and every descendant of it (this test's own /proc walk)."""
    stats = {int(p): st for p in os.listdir("/proc") if p.isdigit() and (st := _proc_stat(int(p)))}
    tree, grew = {root}, True
    while grew:
        grew = False
        for pid, (_, ppid, _) in stats.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    out = {}
    for pid in tree:
        try:
            out[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            pass
    return out


def _kill_by_pid(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process this test started (and its group) by PID, whatever state the test left it in."""
    left = list(_tree(proc.pid))
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    _kill_by_pid([p for p in left if _running(p)])
    proc.wait(timeout=30)


def test_ui_serves_the_store_on_loopback(tmp_path: Path) -> None:
    from sweeper.tracking.tracker import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    Tracker("ui_check", uri)  # creates the store and one experiment
    port = _free_port()
    proc, log = _start_ui(uri, port, tmp_path)
    try:
        body = _wait_for(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=ui_check",
                         proc, log)
        assert "ui_check" in body
        assert "custom_model_development" in body  # marked as a model-training experiment, not GenAI
    finally:
        _stop(proc)


def test_sigterm_stops_the_server_its_workers_and_its_job_runner(tmp_path: Path) -> None:
    """A service manager or a closing terminal signals `sweeper ui` alone: nothing it started may survive."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    port = _free_port()
    proc, log = _start_ui(uri, port, tmp_path)
    started: dict[int, str] = {}
    try:
        _wait_for(f"http://127.0.0.1:{port}/health", proc, log)
        deadline = time.monotonic() + 120  # uvicorn's workers and the job runner come up after the first answer
        while time.monotonic() < deadline:
            started = _tree(proc.pid)
            text = " | ".join(started.values())
            if "mlflow server" in text and "uvicorn" in text and "_job_runner" in text and \
                    len([c for c in started.values() if "multiprocessing" in c]) >= 1:
                break
            time.sleep(1)
        text = " | ".join(started.values())
        assert "mlflow server" in text and "uvicorn" in text and "_job_runner" in text, text
        children = sorted(p for p in started if p != proc.pid)
        groups = {st[2] for p in children if (st := _proc_stat(p))}
        assert proc.pid not in groups  # the server runs in its own process group: SIGTERM reaches only sweeper

        os.kill(proc.pid, signal.SIGTERM)  # to `sweeper ui` alone, as systemd or a closing terminal does
        assert proc.wait(timeout=120) == 128 + signal.SIGTERM
        survivors = {p: started[p] for p in children if _running(p)}
        assert not survivors, f"still running after sweeper ui stopped: {survivors}"
        in_groups = [p for p in map(int, filter(str.isdigit, os.listdir("/proc")))
                     if (st := _proc_stat(p)) and st[2] in groups and st[0] not in ("Z", "X")]
        assert not in_groups, f"processes left in the server's process group: {in_groups}"
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
    finally:
        _kill_by_pid([p for p in started if p != proc.pid and _running(p)])
        _stop(proc)


def _chromium(url: str, profile: Path, *mode: str, out: Path | None = None) -> str:
    """Run headless Chromium once (fresh profile, no network but loopback) and return its stdout; stopped by PID."""
    args = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=30000", *mode, url]
    with (out or profile.with_suffix(".out")).open("wb") as f:
        proc = subprocess.Popen(args, stdout=f, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            proc.wait(timeout=240)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # helpers (renderer, GPU, zygote) share its group
            except (ProcessLookupError, PermissionError):
                pass
    assert proc.returncode == 0, f"chromium exited with {proc.returncode}"
    return (out or profile.with_suffix(".out")).read_text(errors="replace")


def _visible_text(dom: str) -> str:
    import html

    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", text)))


def test_the_experiment_opens_on_its_runs_in_a_real_browser(tmp_path: Path) -> None:
    """A small sweep's store, served by `sweeper ui` (a real mlflow server), loaded in headless Chromium from the
    link sweeper prints: the runs and their metric values are on the page, and it is not the GenAI overview."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium not found: scripts/test.sh installs Debian's chromium (apt-get install chromium)")
    res = subprocess.run([sys.executable, "-m", "sweeper", "baseline", str(ROOT / "experiments/mnist_cnn.yaml"),
                          "--pool", "local", "--output", str(tmp_path / "out")], cwd=tmp_path, capture_output=True,
                         text=True, timeout=900, env=_env())
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads((tmp_path / "out/baseline/results.json").read_text())
    chosen = next(r for r in results["results"] if r["name"] == results["chosen"])
    port = _free_port()
    proc, log = _start_ui(f"sqlite:///{tmp_path / 'mlflow.db'}", port, tmp_path)
    try:
        _wait_for(f"http://127.0.0.1:{port}/health", proc, log)
        links = re.findall(r"mnist_cnn: (http://127\.0\.0\.1:\d+/\S+)", log.read_text())
        assert links, log.read_text()
        text = _visible_text(_chromium(links[0], tmp_path / "profile-dom", "--dump-dom"))
        shot = tmp_path / "runs.png"
        _chromium(links[0], tmp_path / "profile-shot", f"--screenshot={shot}")
        assert shot.stat().st_size > 10_000
        if os.environ.get("SWEEPER_UI_SCREENSHOT"):  # keep the screenshot to look at
            shutil.copy(shot, os.environ["SWEEPER_UI_SCREENSHOT"])
    finally:
        _stop(proc)
    assert "matching runs" in text  # the runs table, not the GenAI overview (usage, quality, tool calls)
    for genai in ("Detect Issues", "Tool calls", "Usage"):
        assert genai not in text, genai
    for r in results["results"]:
        assert f" {r['name']} " in text, r["name"]  # every profile's child run is listed, not collapsed
    assert " baseline " in text  # the step's parent run
    for column in ("metric", "drop", "bops_ratio", "est_latency_ms"):
        assert f" {column} " in text, column
    assert repr(chosen["metric"]) in text and repr(chosen["drop"]) in text  # the values, as MLflow shows them
