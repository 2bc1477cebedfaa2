"""The MLflow server behind ``sweeper ui``: its command line, and stopping it together with every process it
started (uvicorn's workers, the job runner), so nothing outlives ``sweeper ui``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

GRACE_SECONDS = 10.0


def server_command(uri: str, port: int) -> list[str]:
    """A real ``mlflow server`` for the store ``uri`` on 127.0.0.1:``port`` (loopback only)."""
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
            "--port", str(port)]


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, process group) of a live process from /proc; None when gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    if fields[0] in ("Z", "X"):
        return None
    return fields[0], int(fields[1]), int(fields[2])


def _all_pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def process_tree(root: int) -> set[int]:
    """``root``, every live descendant of it, and every live member of its process group (Linux /proc)."""
    stats = {pid: st for pid in _all_pids() if (st := _stat(pid)) is not None}
    tree = {root} if root in stats else set()
    grew = True
    while grew:
        grew = False
        for pid, (_, ppid, pgid) in stats.items():
            if pid not in tree and (ppid in tree or pgid == root):
                tree.add(pid)
                grew = True
    return tree


def alive(pids: set[int]) -> set[int]:
    """The processes of ``pids`` that still run (zombies count as ended)."""
    return {pid for pid in pids if _stat(pid) is not None}


def _signal_all(proc: subprocess.Popen[bytes], pids: set[int], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)  # the group leader's group: everything it started that stayed in the group
    except (ProcessLookupError, PermissionError):
        pass
    for pid in pids:  # and whatever left the group (a child that called setsid)
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_process_tree(proc: subprocess.Popen[bytes], grace: float = GRACE_SECONDS) -> set[int]:
    """Stop ``proc`` (started with ``start_new_session=True``) and every process it started: SIGTERM to the
    group and to each descendant, wait up to ``grace`` seconds, then SIGKILL what is left. Returns the PIDs
    that were stopped."""
    pids = process_tree(proc.pid)
    _signal_all(proc, pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()
        pids |= process_tree(proc.pid) if proc.returncode is None else set()
        if not alive(pids) and proc.returncode is not None:
            break
        time.sleep(0.1)
    if alive(pids) or proc.poll() is None:
        _signal_all(proc, alive(pids), signal.SIGKILL)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    return pids


__all__ = ["alive", "process_tree", "server_command", "stop_process_tree"]
