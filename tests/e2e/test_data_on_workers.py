"""Evaluation data loaded on each worker (``data.load_on_workers``): the spec sent to workers holds no data,
every Ray worker calls the loader itself, and the metrics are those of data sent the usual way."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import cloudpickle as pickle  # what Ray uses to send the spec
import pytest

import sweeper
from sweeper.config.experiment import load_experiment

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def _mnist(tmp_path: Path, evaluation: object, on_workers: bool, pool: str, workers: int) -> sweeper.Session:
    exp = load_experiment(ROOT / "experiments" / "mnist_cnn.yaml")
    data = dataclasses.replace(exp.data, evaluation=evaluation, load_on_workers=on_workers)
    exp = dataclasses.replace(exp, data=data, output=tmp_path / f"out-{on_workers}", pool=pool, workers=workers,
                              candidates=tuple(c for c in exp.candidates if c.name in ("w8a8", "w4a8")))
    return sweeper.Session(exp, tracking=False)


@pytest.mark.isolated
def test_evaluation_loader_is_called_on_each_worker(tmp_path: Path) -> None:
    log = tmp_path / "loads.txt"

    def evaluation() -> dict:  # nested, so Ray ships it by value to the workers
        from sweeper.examples.mnist import evaluation_data

        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        return evaluation_data()

    with _mnist(tmp_path, evaluation, True, "ray", 2) as s:
        spec = s.ws.worker_spec()
        sent = len(pickle.dumps(spec))
        on_workers = {r.name: r.metric for r in s.baseline().rows} | {"fp32": s.ws.fp32_metric}
    pids = [int(x) for x in log.read_text().split()]
    assert pids.count(os.getpid()) == 1  # the driver: once, for the FP32 reference and the fingerprint
    assert len(set(pids) - {os.getpid()}) == 2, pids  # and each of the two Ray workers, once

    with _mnist(tmp_path, "sweeper.examples.mnist:evaluation_data", False, "local", 1) as s:
        sent_usually = {r.name: r.metric for r in s.baseline().rows} | {"fp32": s.ws.fp32_metric}
        # the 1541 evaluation images (4.8 MB) are what the spec no longer holds
        assert len(pickle.dumps(s.ws.worker_spec())) > sent + 4_500_000
    assert on_workers == sent_usually and set(on_workers) >= {"fp32", "w8a8", "w4a8"}
