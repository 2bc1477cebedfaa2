"""The Python API: build an experiment in code and run any workflow step on it.

>>> import sweeper
>>> exp = sweeper.experiment("my_model", model="model.onnx", calibration=cal_feeds, evaluation=eval_data,
...                          metric="top1", max_drop=0.01)
>>> with sweeper.Session(exp) as s:
...     base = s.baseline()            # the same objects the CLI writes as JSON
...     amp = s.amp(candidates=["w4a8", "w8a8", "fp16"])
...     s.export("w8a8", "model_w8a8.onnx")

``model`` is an ONNX path, an ``onnx.ModelProto``, a ``torch.nn.Module`` (with ``example_input``) or a
function returning any of those; data is a dict of arrays (samples along axis 0), a list (or iterable) of
feed dicts passed to the model as given, or a function returning either; ``metric`` is a built-in name or
a callable ``fn(run, data) -> float`` that receives the evaluation data exactly as given. The CLI is a thin
layer over this module.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sweeper.config.spec import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_POOL,
    DEFAULT_REUSE_MB,
    DEFAULT_WORKERS,
    POOLS,
    CalibrationSpec,
    DataSpec,
    Experiment,
    ModelSpec,
)
from sweeper.errors import SweeperError
from sweeper.quant.precision import DEFAULT_CANDIDATES, Precision
from sweeper.quant.profile import Profile

ModelLike = Any  # str | os.PathLike | onnx.ModelProto | torch.nn.Module | Callable[[], ...]
DataLike = Any  # Mapping[str, np.ndarray] | Iterable[Mapping[str, np.ndarray]] | Callable[[], ...]


def _model_spec(model: ModelLike, example_input: Any) -> ModelSpec:
    """Any model form as a ModelSpec (intake: :meth:`sweeper.pipeline.Workspace._load_model`)."""
    if isinstance(model, str | os.PathLike):
        path = Path(model).expanduser().resolve()
        if not path.is_file():
            raise SweeperError("model", f"model file not found: {path}")
        return ModelSpec(onnx=path, torch=None)
    try:
        import torch

        if isinstance(model, torch.nn.Module):
            if example_input is None:
                raise SweeperError("example_input", "a torch.nn.Module needs example_input (a tensor, a tuple "
                                                    "of tensors, or a dict of named tensors) to be exported")
            module = model
            return ModelSpec(onnx=None, torch=None, onnx_factory=lambda: (module, example_input))
    except ImportError:
        pass
    import onnx

    if isinstance(model, onnx.ModelProto):
        proto = model
        return ModelSpec(onnx=None, torch=None, onnx_factory=lambda: proto)
    if callable(model):
        return ModelSpec(onnx=None, torch=None, onnx_factory=model)
    raise SweeperError("model", f"got {type(model).__name__}: expected an ONNX path, an onnx.ModelProto, a "
                                "torch.nn.Module or a function returning one")


def _loader_on_workers(on: bool, evaluation: Any) -> bool:
    if on and not (callable(evaluation) or isinstance(evaluation, str | os.PathLike)):
        raise SweeperError("load_on_workers", f"evaluation is {type(evaluation).__name__}: expected a loader "
                                              "(a callable or pkg.module:function) that each worker calls")
    return bool(on)


def experiment(name: str, model: ModelLike, calibration: DataLike, evaluation: DataLike | None = None, *,
               metric: str | Callable[..., float] = "top1", higher_is_better: bool = True,
               max_drop: float = 0.01, candidates: Iterable[str | Precision] = DEFAULT_CANDIDATES,
               batch_size: int = DEFAULT_BATCH_SIZE, example_input: Any = None, metric_output: str | None = None,
               output: str | os.PathLike[str] | None = None, pool: str = DEFAULT_POOL,
               workers: int = DEFAULT_WORKERS,
               threads_per_worker: int = 1, calibration_scheme: str = "minmax", calibration_samples: int | None = None,
               act_symmetric: bool = False, weight_symmetric: bool = True, per_channel: bool = True,
               tracking_uri: str | None = None, study_storage: str | None = None, cost_target: str = "npu_generic",
               reuse_memory_mb: int = DEFAULT_REUSE_MB, load_on_workers: bool = False,
               early_stop: bool = True) -> Experiment:
    """An :class:`~sweeper.config.experiment.Experiment` built in code (the same object an experiment file
    gives). ``evaluation`` defaults to the calibration data; ``load_on_workers``: each worker calls the
    ``evaluation`` loader (a callable) itself instead of receiving the data; ``early_stop`` (the file's
    ``target.early_stop``): pass/fail probes stop once they cannot meet the target. Errors are
    :class:`~sweeper.errors.SweeperError` naming the argument."""
    if not name or any(c in name for c in "/\\ "):
        raise SweeperError("name", f"found {name!r}: expected a non-empty name without spaces or slashes")
    if isinstance(metric, str) and metric in ("top1", "cosine", "sqnr") and not higher_is_better:
        raise SweeperError("higher_is_better", f"built-in metric {metric} is higher-is-better")
    if isinstance(max_drop, bool) or not (isinstance(max_drop, int | float) and math.isfinite(max_drop)
                                          and max_drop >= 0):
        raise SweeperError("max_drop", f"found {max_drop!r}: expected a number >= 0")
    for arg, value, least in (("batch_size", batch_size, 1), ("workers", workers, 1),
                              ("threads_per_worker", threads_per_worker, 1), ("reuse_memory_mb", reuse_memory_mb, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise SweeperError(arg, f"found {value!r}: expected a whole number >= {least}")
    if pool not in POOLS:
        raise SweeperError("pool", f"found {pool!r}: expected one of {', '.join(POOLS)}")
    try:
        precs = tuple(dict.fromkeys(c if isinstance(c, Precision) else Precision.parse(c) for c in candidates))
    except ValueError as exc:
        raise SweeperError("candidates", str(exc)) from None
    if not precs:
        raise SweeperError("candidates", "expected at least one precision, e.g. ['w8a8', 'w8a16']")
    out = Path(output) if output is not None else Path("runs") / name
    return Experiment(
        name=name, path=Path(f"<{name}>"), model=_model_spec(model, example_input),
        data=DataSpec(calibration=calibration, evaluation=calibration if evaluation is None else evaluation,
                      load_on_workers=_loader_on_workers(load_on_workers, evaluation)),
        metric=metric, higher_is_better=higher_is_better, batch_size=batch_size, max_drop=float(max_drop),
        candidates=precs, calibration=CalibrationSpec(scheme=calibration_scheme, samples=calibration_samples,
                                                      act_symmetric=act_symmetric, weight_symmetric=weight_symmetric,
                                                      per_channel=per_channel),
        workers=workers, pool=pool, threads_per_worker=threads_per_worker, output=out.expanduser().resolve(),
        tracking_uri=tracking_uri, study_storage=study_storage, cost_target=cost_target,
        reuse_memory_mb=reuse_memory_mb, metric_output=metric_output, early_stop=bool(early_stop))


class Session:
    """One prepared experiment (model, calibration, FP32 reference: built once) and the steps run on it.

    ``tracking=False`` skips MLflow; ``pool``/``workers``/``address`` override the experiment's pool. Use it as
    a context manager (or call :meth:`close`) so the worker pool and temporary files are released."""

    def __init__(self, exp: Experiment | str | os.PathLike[str], *, tracking: bool = True, pool: str | None = None,
                 workers: int | None = None, address: str | None = None) -> None:
        from sweeper.config.experiment import load_experiment
        from sweeper.pipeline import Workspace

        if not isinstance(exp, Experiment):
            exp = load_experiment(exp)
        overrides = {k: v for k, v in (("pool", pool), ("workers", workers)) if v is not None}
        self.exp = dataclasses.replace(exp, **overrides) if overrides else exp
        self.address = address
        early = self.exp.pool == "ray" and not address
        if early:  # Ray starts while the model is prepared (cluster.runtime.start_runtime_early)
            from sweeper.cluster.runtime import start_runtime_early

            start_runtime_early(max(self.exp.workers * self.exp.threads_per_worker, os.cpu_count() or 1))
        try:
            self.ws = Workspace(self.exp)
        except BaseException:
            _release_early_runtime()
            raise
        self.tracker = None
        if tracking:
            from sweeper.tracking.tracker import Tracker

            self.tracker = Tracker(self.exp.name, self.exp.tracking_uri)
        self._pool: Any = None
        self._needs: Any = None

    # -- the pool ---------------------------------------------------------------------------------
    def pool(self, needs: Any) -> Any:
        """A worker pool that can run a step with ``needs`` (a :class:`~sweeper.search.step.PoolNeeds`);
        the current one is reused when it covers them."""
        from sweeper.search.step import PoolNeeds

        needs = needs or PoolNeeds()
        if self._pool is not None and self._needs is not None and self._needs.merge(needs) == self._needs:
            return self._pool
        merged = needs if self._needs is None else self._needs.merge(needs)
        if self._pool is not None:
            self._pool.close()
        self._pool = self.ws.pool(address=self.address, extra_precisions=merged.extra_precisions,
                                  probes=merged.probes, reuse=merged.reuse)
        self._needs = merged
        return self._pool

    def run_step(self, step: Any, fresh: bool = False) -> Any:
        """Run any :class:`~sweeper.search.step.Step` and return its result object."""
        from sweeper.search.step import run_step

        return run_step(step, self.ws, self.pool(step.pool_needs()), self.tracker, fresh).value

    # -- the steps --------------------------------------------------------------------------------
    def baseline(self, fresh: bool = False) -> Any:
        """Step 1: every candidate uniformly (a :class:`~sweeper.search.baseline.BaselineReport`)."""
        from sweeper.search.baseline import BaselineStep

        return self.run_step(BaselineStep(self.ws), fresh)

    def analyze(self, precision: str | Precision = "w8a8", ranking: str = "enable_one", fresh: bool = False, *,
                base: str | Precision | None = None) -> Any:
        """Step 2a: per-group sensitivity at a uniform ``precision`` (an
        :class:`~sweeper.search.analyzer.AnalysisReport`); ``base=`` is the older name of ``precision``."""
        from sweeper.search.analyzer import AnalyzeStep

        return self.run_step(AnalyzeStep(self.ws, _prec(_renamed(precision, base), "precision"), ranking), fresh)

    def litemp(self, precision: str | Precision = "w8a8", high: str | Precision = "fp16",
               ks: tuple[float, ...] | None = None, ranking: str = "enable_one", fresh: bool = False, *,
               base: str | Precision | None = None) -> Any:
        """Step 2b: flip the most sensitive groups of the uniform ``precision`` to ``high`` (a
        :class:`~sweeper.search.litemp.LiteMPReport`); runs the analysis first when there is no ranking for it
        (:func:`~sweeper.search.litemp.run_litemp`, on one pool that covers both). ``base=`` is the older name
        of ``precision``."""
        from sweeper.search.litemp import DEFAULT_KS, litemp_needs, run_litemp

        b, h = _prec(_renamed(precision, base), "precision"), _prec(high, "high")
        return run_litemp(self.ws, self.pool(litemp_needs(b, h)), self.tracker, b, h, tuple(ks or DEFAULT_KS),
                          ranking, fresh)

    def amp(self, candidates: Iterable[str | Precision] | None = None, algorithm: str = "auto",
            cost: str = "bops", objective: str = "multi", trials: int = 100, timeout: float | None = None,
            fresh: bool = False, measure: bool = True) -> Any:
        """Step 3: automatic mixed precision (an :class:`~sweeper.search.amp.step.AMPReport`)."""
        from sweeper.search.amp.step import run_amp

        cands = [_prec(c, "candidates") for c in (candidates or self.exp.candidates)]
        pool = self.pool(amp_needs(cands, algorithm, len(self.ws.graph.groups)))
        return run_amp(self.ws, pool, self.tracker, candidates=cands, algorithm=algorithm, cost=cost,
                       objective=objective, trials=trials, timeout=timeout, fresh=fresh, measure=measure)

    def adaround(self, precision: str | Precision = "w4a8", iterations: int = 1000, fresh: bool = False) -> Any:
        """Step 4: AdaRound at a uniform precision, kept only when it evaluates better than nearest rounding
        (the ``results.json`` document); :meth:`use_adaround` runs later steps on the kept weights."""
        from sweeper.search.adaround import AdaRoundStep
        from sweeper.techniques.adaround.optimize import AdaRoundConfig

        return self.run_step(AdaRoundStep(self.ws, _prec(precision, "precision"), AdaRoundConfig(iterations)), fresh)

    def qat(self, profile: str | Precision | Profile | os.PathLike[str] = "w4a8", *, data: DataLike | None = None,
            train: Callable[..., Any] | str | None = None, epochs: int | None = None, lr: float | None = None,
            batch_size: int | None = None, fresh: bool = False) -> Any:
        """Step 5: quantization-aware training of ``profile`` (a precision, a Profile, an AIMET encodings file or
        an AMP results.json), exported as QDQ (a :class:`~sweeper.search.qat.QATReport`). ``data`` (labelled
        training data) and ``train`` (``fn(model, data, settings)``) override the experiment's ``qat`` section."""
        from sweeper.search.qat import QATStep
        from sweeper.search.step import run_step

        step = QATStep(self.ws, profile, data=data, train_fn=train, epochs=epochs, lr=lr, batch_size=batch_size)
        return run_step(step, self.ws, None, self.tracker, fresh).value  # no worker pool: it trains in process

    def export(self, profile: str | Precision | Profile | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
        """One profile (a uniform precision, a Profile, or an AIMET encodings file, checked against the model) as
        QDQ ONNX plus ``.encodings`` next to it; returns the ONNX path (:mod:`sweeper.export.profile`, which
        ``sweeper export`` uses too)."""
        from sweeper.export.profile import export_profile, resolve_profile

        prof = resolve_profile(self.ws.graph, self.ws.table, profile, "profile")
        return export_profile(self.ws.graph, self.ws.table, prof, out)[0]

    def run(self, settings: Any = None, fresh: bool = False,
            show: Callable[[str, Any], None] = lambda name, value: None) -> Any:
        """The whole workflow with its decision rules (a :class:`~sweeper.search.workflow.WorkflowReport`);
        ``settings``: a :class:`~sweeper.config.experiment.WorkflowSpec` (default: the experiment's
        ``workflow`` section)."""
        from sweeper.search.workflow import run_workflow

        return run_workflow(self, settings or self.exp.workflow, fresh, show)

    def use_adaround(self, path: str | os.PathLike[str]) -> None:
        """Run every later step on AdaRound's learned weights (an ``adaround`` folder or its rounding.npz);
        the workers are rebuilt with them."""
        from sweeper.techniques.adaround.rounding_file import load_rounding

        self.ws.use_rounding(load_rounding(Path(path)), str(path))
        self._drop_pool()

    def use_model(self, model: str | os.PathLike[str]) -> None:
        """Run every later step on another float model of the same task, an ONNX file (QAT's ``trained.onnx``):
        prepared and calibrated afresh, its profiles judged against the original model's FP32 metric and
        outputs; the workers are rebuilt with it."""
        from sweeper.pipeline import Workspace

        path = Path(model).resolve()
        if not path.is_file():
            raise SweeperError("use_model", f"{path} does not exist: expected an ONNX file")
        spec = dataclasses.replace(self.exp.model, onnx=path, torch=None, onnx_factory=None)
        exp = dataclasses.replace(self.exp, model=spec, rounding=None)  # AdaRound's integers were the old weights'
        ws = Workspace(exp, reference_of=self.ws)
        self._drop_pool()
        old, self.ws, self.exp = self.ws, ws, exp
        old.close()

    def set_output(self, output: str | os.PathLike[str]) -> None:
        """Write later steps' folders under ``output``."""
        out = Path(output).resolve()
        self.exp = dataclasses.replace(self.exp, output=out)
        self.ws.exp = dataclasses.replace(self.ws.exp, output=out)

    def _drop_pool(self) -> None:
        if self._pool is not None:
            self._pool.close()
        self._pool, self._needs = None, None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        _release_early_runtime()  # a Ray runtime started early that no pool took (nothing to evaluate)
        self.ws.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _release_early_runtime() -> None:
    from sweeper.cluster.runtime import release_early_runtime

    release_early_runtime()


def amp_needs(candidates: Iterable[Precision], algorithm: str = "greedy", groups: int = 0) -> Any:
    """What AMP's workers need: its candidates, and prefix reuse when greedy's phase 1 runs (it changes one
    group of the baseline at a time). The fast search's probes share no prefix with a reference: reuse would
    only cost memory and start-up (measured on the layout detector: 3.9 GB per worker instead of 1.2 GB,
    and 20 s more of worker start, for no faster search)."""
    from sweeper.search.amp.common import resolve_algorithm
    from sweeper.search.step import PoolNeeds

    names = tuple(c.name for c in candidates)
    return PoolNeeds(names, reuse="greedy" in resolve_algorithm(algorithm, groups, len(names)))


def _renamed(precision: str | Precision, base: str | Precision | None) -> str | Precision:
    """``precision``, or the value given under its older keyword ``base``."""
    return precision if base is None else base


def _prec(p: str | Precision, arg: str) -> Precision:
    if isinstance(p, Precision):
        return p
    try:
        return Precision.parse(p)
    except ValueError as exc:
        raise SweeperError(arg, str(exc)) from None


__all__ = ["Session", "experiment"]
