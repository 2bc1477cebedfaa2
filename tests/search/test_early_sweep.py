"""Stopped evaluations through the steps: a Step-1 candidate that cannot meet the target stops after a
fraction of the data, never meets it, is a pruned trial of the study, is taken as it is by a rerun and by
pass/fail probes, and is evaluated again in full by a caller that needs its metric; AMP never accepts one and
puts none on its front; ``target.early_stop: false`` evaluates everything in full."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import optuna
from conftest import fragile_mlp, write_experiment

from sweeper.config.experiment import load_experiment
from sweeper.pipeline import Workspace
from sweeper.quant.precision import Precision
from sweeper.quant.profile import Profile
from sweeper.search.amp.step import run_amp
from sweeper.search.baseline import run_baseline
from sweeper.search.evaluate import Sweep
from sweeper.search.study import study_name

N = 256


class CountingPool:
    """The in-process pool, counting the profiles it evaluates and the targets it is given."""

    def __init__(self, pool) -> None:  # noqa: ANN001
        self.pool, self.seen, self.targets = pool, Counter(), []
        self.size = pool.size

    def map_unordered(self, profiles, reference=None, target=None):  # noqa: ANN001, ANN201
        profiles = list(profiles)
        self.seen.update(p.key for p in profiles)
        self.targets.append(target)
        return self.pool.map_unordered(profiles, reference, target)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.pool, name)


def _ws(tmp: Path, early: bool = True) -> Workspace:
    x = np.random.default_rng(3).standard_normal((N, 16)).astype(np.float32)
    exp = load_experiment(write_experiment(tmp, fragile_mlp(), {"x": x}, max_drop=0.002,
                                           candidates="[w4a8, w8a8, fp16]", extra="batch_size: 16\n"))
    return Workspace(exp if early else dataclasses.replace(exp, early_stop=False))


def test_a_failing_candidate_stops_early_and_is_evaluated_again_where_its_metric_is_needed(tmp_path: Path) -> None:
    ws = _ws(tmp_path)
    groups = [g.name for g in ws.graph.groups]
    w4a8 = Profile.uniform(groups, Precision.parse("w4a8"))
    pool = CountingPool(ws.pool())
    try:
        rows = {r.name: r for r in run_baseline(ws, pool, None).rows}
        bad, good = rows["w4a8"], rows["fp16"]
        assert bad.stopped_early and bad.samples_evaluated is not None and bad.samples_evaluated <= N // 4
        assert not bad.meets_target and not ws.meets(bad.metric)
        assert not good.stopped_early and good.samples_evaluated == N and good.meets_target
        # the study: a pruned trial at the samples it ran, the others complete
        study = optuna.load_study(study_name=study_name(ws.exp.name, "baseline", ws.fingerprint),
                                  storage=f"sqlite:///{ws.exp.output / 'study.db'}")
        stopped = {r.profile_key: r for r in rows.values() if r.stopped_early}
        assert {t.user_attrs["sweeper"]["profile_key"] for t in study.trials if t.state.name == "PRUNED"} == set(stopped)
        assert sum(t.state.name == "COMPLETE" for t in study.trials) == len(rows) - len(stopped)
        pruned = next(t for t in study.trials if t.user_attrs["sweeper"]["profile_key"] == w4a8.key)
        assert list(pruned.intermediate_values) == [bad.samples_evaluated]

        # a rerun takes the stopped result as it is (a pass/fail question it answered)
        pool.seen.clear()
        again = {r.name: r for r in run_baseline(ws, pool, None).rows}
        assert not pool.seen and again["w4a8"].stopped_early and again["w4a8"].resumed

        # a caller needing the metric itself evaluates it again, in full
        sweep = Sweep(ws, "baseline", "baseline", tmp_path / "x", None, export=False)
        full = sweep.evaluate(pool, {"w4a8": w4a8})["w4a8"]
        sweep.finish()
        assert pool.seen[w4a8.key] == 1 and not full.stopped_early and full.samples_evaluated == N
        assert not full.meets_target
    finally:
        pool.close()
        ws.close()

    (tmp_path / "full").mkdir()
    off = _ws(tmp_path / "full", early=False)
    try:
        rows = {r.name: r for r in run_baseline(off, off.pool(), None).rows}
        assert not any(r.stopped_early for r in rows.values()) and {r.samples_evaluated for r in rows.values()} == {N}
        assert rows["w4a8"].metric == full.metric  # the full metric, whichever way it was asked for
    finally:
        off.close()


def test_amp_never_accepts_a_stopped_profile_nor_puts_it_on_its_front(tmp_path: Path) -> None:
    ws = _ws(tmp_path)
    pool = CountingPool(ws.pool())
    try:
        doc = run_amp(ws, pool, None, candidates=list(ws.exp.candidates), algorithm="fast", measure=False).doc
    finally:
        pool.close()
        ws.close()
    stopped = [e for e in doc["all"] if e["stopped_early"]]
    assert stopped and all(e["samples_evaluated"] < N for e in stopped)  # fast's failing probes stopped
    front = {e["name"] for e in doc["pareto_front"]}
    assert not front & {e["name"] for e in stopped}
    acc = doc["accepted"]
    assert acc is not None and acc["name"] not in {e["name"] for e in stopped} and acc["drop"] <= ws.exp.max_drop
    assert any(t is not None for t in pool.targets)
