"""AMP's results record faults: a Ray worker killed (SIGKILL) during ``Session.amp`` is replaced, its calls run
again, and ``results.json``'s ``faults`` entry says so (workers replaced, profiles re-evaluated, no node lost);
the search loses nothing (the same answer and the same evaluations as the run without the fault). A run on the
in-process pool records no fault.

The tiny CNN of conftest on a real local Ray runtime with 2 workers. The Ray test starts Ray in the test process,
so it is marked ``isolated`` (tests/conftest.py: it runs in a child pytest)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
from conftest import cnn_data, cnn_model, write_experiment

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CANDIDATES = ["w2a8", "w4a8", "w8a8"]


def _experiment(tmp: Path) -> Path:
    return write_experiment(tmp, cnn_model(), cnn_data(), max_drop=0.01, candidates=f"[{', '.join(CANDIDATES)}]")


def _amp(exp: Path, pool: str, kill: bool) -> tuple[dict[str, Any], list[int]]:
    """Greedy AMP through the Python API; with ``kill``, one worker's process is SIGKILLed right after the first
    evaluation comes back (the pool's own evaluation path, wrapped)."""
    import sweeper
    from sweeper.api import amp_needs

    killed: list[int] = []
    with sweeper.Session(exp, tracking=False, pool=pool, workers=2) as s:
        if kill:
            runner = s.pool(amp_needs(list(s.exp.candidates), "greedy", len(s.ws.graph.groups)))
            evaluate = runner.map_unordered

            def kill_after_first(profiles, reference=None, target=None):  # noqa: ANN001, ANN202
                it = evaluate(profiles, reference, target)
                for res in it:
                    if not killed:
                        pid = runner.started().worker_pids()[0]
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                    yield res

            runner.map_unordered = kill_after_first
        rep = s.amp(algorithm="greedy", measure=False)
    return rep.doc, killed


@pytest.mark.isolated
def test_amp_results_record_a_killed_worker(tmp_path: Path) -> None:
    (tmp_path / "ray").mkdir()
    (tmp_path / "local").mkdir()
    doc, killed = _amp(_experiment(tmp_path / "ray"), "ray", kill=True)
    assert killed, "no worker was killed"
    faults = doc["faults"]
    assert faults is not None and faults["replaced_workers"] >= 1, faults
    assert faults["reevaluated"] >= 1 and faults["lost_nodes"] == [], faults  # its calls ran again; the node lives
    # nothing lost or counted twice: the same evaluations and answer as a run without the fault
    clean, _ = _amp(_experiment(tmp_path / "local"), "local", kill=False)
    assert clean["faults"] == {"replaced_workers": 0, "reevaluated": 0, "lost_nodes": []}
    assert doc["evaluations"] == clean["evaluations"]
    assert sorted((a["name"], a["metric"]) for a in doc["all"]) == sorted((a["name"], a["metric"]) for a in clean["all"])
    assert doc["accepted"]["assignment"] == clean["accepted"]["assignment"]
