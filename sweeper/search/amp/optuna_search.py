"""AMP's ``optuna`` search: one categorical parameter per group, NSGA-II or constrained TPE, asynchronous
ask/tell over the worker pool, seeded with an earlier search's profiles, resumable from its storage."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sweeper.pipeline import Workspace
from sweeper.quant.precision import Precision
from sweeper.quant.profile import Profile
from sweeper.search.amp.common import AMPState
from sweeper.search.evaluate import Evaluated
from sweeper.search.names import OBJECTIVES
from sweeper.search.step import Stream
from sweeper.search.study import prepared_storage


class OptunaAMP:
    """Optuna search over per-group precisions with asynchronous ask/tell (see the module docstring)."""

    def __init__(self, ws: Workspace, candidates: list[Precision], cost: Callable[[Profile], float],
                 storage: str, name: str, objective: str, seed: int = 0, fresh: bool = False) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.ws = ws
        self.groups = [g.name for g in ws.graph.groups]
        self.cost = cost
        self.objective = objective
        self.dist = optuna.distributions.CategoricalDistribution(tuple(c.name for c in candidates))
        rdb = prepared_storage(storage, name, fresh)
        threshold = ws.fp32_metric - ws.exp.max_drop if ws.exp.higher_is_better else ws.fp32_metric + ws.exp.max_drop
        self.threshold = threshold
        if objective == "multi":
            sampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=max(8, min(50, 2 * len(self.groups))))
            self.study = optuna.create_study(study_name=name, storage=rdb, load_if_exists=True,
                                             directions=["maximize" if ws.exp.higher_is_better else "minimize",
                                                         "minimize"], sampler=sampler)
        elif objective == "constrained":
            sampler = optuna.samplers.TPESampler(seed=seed, constraints_func=lambda t: [t.user_attrs.get("violation", 0.0)],
                                                 multivariate=True, group=False)
            self.study = optuna.create_study(study_name=name, storage=rdb, load_if_exists=True,
                                             direction="minimize", sampler=sampler)
        else:
            raise ValueError(f"unknown objective {objective!r}: expected one of {', '.join(OBJECTIVES)}")
        from optuna.trial import TrialState

        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # interrupted earlier
            self.study.tell(t.number, state=TrialState.FAIL)
        self.running: dict[str, list[Any]] = {}

    def done_trials(self) -> int:
        from optuna.trial import TrialState

        return len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def seed_with(self, profiles: list[Profile]) -> None:
        if self.study.trials:
            return  # resumed: already seeded
        for p in profiles:
            self.study.enqueue_trial({g: p[g].name for g in self.groups})

    def ask(self) -> tuple[str, Profile]:
        trial = self.study.ask({g: self.dist for g in self.groups})
        profile = Profile.make({g: trial.params[g] for g in self.groups})
        self.running.setdefault(profile.key, []).append(trial)
        return f"optuna:{trial.number}", profile

    def tell(self, profile: Profile, metric: float) -> None:
        from optuna.trial import TrialState

        for trial in self.running.pop(profile.key, []):
            cost = self.cost(profile)
            if self.objective == "multi":
                self.study.tell(trial, [metric, cost])
            else:
                ok = metric >= self.threshold if self.ws.exp.higher_is_better else metric <= self.threshold
                violation = 0.0 if ok else abs(self.threshold - metric)
                trial.set_user_attr("violation", violation)
                self.study.tell(trial, cost, state=TrialState.COMPLETE)


class OptunaSearch:
    """Optuna AMP as a search of the AMP step: one Stream of ask/tell trials, seeded with the greedy
    Pareto list when greedy ran first (else the uniform candidates), within a trial and time budget."""

    def __init__(self, ws: Workspace, candidates: list[Precision], cost: Callable[[Profile], float], cost_name: str,
                 objective: str, trials: int, timeout: float | None, fresh: bool) -> None:
        self.ws, self.candidates, self.cost, self.cost_name = ws, candidates, cost, cost_name
        self.objective, self.trials, self.timeout, self.fresh = objective, trials, timeout, fresh
        self.search: OptunaAMP | None = None
        self.name = ""

    def propose(self, state: AMPState, ok: Callable[[float], bool]) -> Stream | None:
        if self.search is not None:
            return None
        from sweeper.search.evaluate import default_storage
        from sweeper.search.study import study_name

        ws = self.ws
        self.name = study_name(ws.exp.name, f"amp-optuna-{self.objective}-{self.cost_name}",
                               {"candidates": [c.name for c in self.candidates], **ws.fingerprint})
        search = self.search = OptunaAMP(ws, self.candidates, self.cost, default_storage(ws), self.name,
                                         self.objective, fresh=self.fresh)
        groups = [g.name for g in ws.graph.groups]
        search.seed_with(state.seeds or [Profile.uniform(groups, c) for c in self.candidates])
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        asked = search.done_trials()

        def next_profile() -> tuple[str, Profile] | None:
            nonlocal asked
            if asked >= self.trials or (deadline is not None and time.monotonic() > deadline):
                return None
            asked += 1
            return search.ask()

        return Stream(next_profile, total=self.trials)

    def observe(self, results: dict[str, Evaluated], profiles: dict[str, Profile]) -> None:
        assert self.search is not None
        for name, ev in results.items():
            self.search.tell(profiles[name], ev.metric)

    def report(self, state: AMPState, ok: Callable[[float], bool]) -> dict[str, Any] | None:
        from sweeper.search.evaluate import default_storage

        if self.search is None:
            return None
        return {"study": self.name, "storage": default_storage(self.ws), "objective": self.objective,
                "completed_trials": self.search.done_trials()}
