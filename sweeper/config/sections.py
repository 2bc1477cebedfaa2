"""The experiment file's sections, validated one by one into the dataclasses of :mod:`sweeper.config.spec`;
:func:`experiment_from` is the whole file (its mapping) to an :class:`~sweeper.config.spec.Experiment`."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sweeper.config.fields import (
    IMPORT_PATH,
    Ctx,
    boolean,
    describe,
    import_path,
    integer,
    mapping,
    number,
    required,
    string,
)
from sweeper.config.paths import (
    TRACKING_EXPECTED,
    existing_file,
    local_path,
    tracking_uri_problem,
    writable_dir_problem,
)
from sweeper.config.spec import (
    ARTIFACT_MODES,
    BIAS_MODES,
    DEFAULT_BATCH_SIZE,
    DEFAULT_PERCENTILE,
    DEFAULT_POOL,
    DEFAULT_REUSE_MB,
    DEFAULT_WORKERS,
    POOLS,
    CalibrationSpec,
    DataSpec,
    Experiment,
    ModelSpec,
    QATSpec,
    WorkflowSpec,
)
from sweeper.errors import SweeperError
from sweeper.eval.metrics import BUILTIN_METRICS
from sweeper.quant.encoding import SCHEMES
from sweeper.quant.precision import DEFAULT_CANDIDATES, Precision

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

_TOP_KEYS = (
    "name", "model", "data", "metric", "higher_is_better", "batch_size", "target", "candidates",
    "calibration", "workers", "pool", "threads_per_worker", "reuse_memory_mb", "output", "tracking", "study",
    "cost", "metric_output", "qat", "workflow", "rounding",
)
_MODEL_KEYS = ("onnx", "torch")
_DATA_KEYS = ("calibration", "evaluation", "load_on_workers")
_TARGET_KEYS = ("max_drop", "early_stop")
_CALIBRATION_KEYS = ("scheme", "percentile", "samples", "act_symmetric", "weight_symmetric", "per_channel", "bias")
_TRACKING_KEYS = ("uri", "artifacts")
_STUDY_KEYS = ("storage",)
_COST_KEYS = ("target",)
_QAT_KEYS = ("data", "train", "epochs", "lr", "batch_size")
_WORKFLOW_KEYS = tuple(f.name for f in dataclasses.fields(WorkflowSpec))


def _name(ctx: Ctx, raw: Mapping[str, Any]) -> str:
    value = required(ctx, raw, "name", "name", "a name made of letters, digits, '_', '.' and '-'")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _NAME.match(value):
        raise ctx.error("name", f"found {describe(value)}: expected letters, digits, '_', '.' and '-' only")
    return value


def _model(ctx: Ctx, raw: Mapping[str, Any]) -> ModelSpec:
    section = mapping(ctx, required(ctx, raw, "model", "model", "a mapping with onnx or torch"),
                       "model", _MODEL_KEYS)
    given = [k for k in _MODEL_KEYS if section.get(k) is not None]
    if len(given) != 1:
        found = "both onnx and torch" if len(given) == 2 else "neither"
        raise ctx.error("model", f"found {found}: expected exactly one of onnx (a .onnx file) "
                                 "or torch (pkg.module:factory)")
    if given[0] == "onnx":
        text = string(ctx, section["onnx"], "model.onnx", "a path to a .onnx file")
        if IMPORT_PATH.match(text) and not text.endswith(".onnx"):
            return ModelSpec(onnx=None, torch=None, onnx_factory=text)
        return ModelSpec(onnx=existing_file(ctx, text, "model.onnx", "model file"), torch=None)
    text = string(ctx, section["torch"], "model.torch", "an import path pkg.module:factory")
    return ModelSpec(onnx=None, torch=import_path(ctx, text, "model.torch",
                                                   "an import path pkg.module:factory"))


def _data_source(ctx: Ctx, section: Mapping[str, Any], key: str, prefix: str = "data") -> str:
    field = f"{prefix}.{key}"
    expected = "a .npz file or an import path pkg.module:function"
    text = string(ctx, required(ctx, section, key, field, expected), field, expected)
    if text.lower().endswith(".npz"):
        return str(existing_file(ctx, text, field, "data file"))
    if IMPORT_PATH.match(text):
        return text
    raise ctx.error(field, f"found {text!r}: expected {expected}")


def _data(ctx: Ctx, raw: Mapping[str, Any]) -> DataSpec:
    section = mapping(ctx, required(ctx, raw, "data", "data", "a mapping with calibration and evaluation"),
                       "data", _DATA_KEYS)
    return DataSpec(calibration=_data_source(ctx, section, "calibration"),
                    evaluation=_data_source(ctx, section, "evaluation"),
                    load_on_workers=boolean(ctx, section, "load_on_workers", "data.load_on_workers", False))


def _metric(ctx: Ctx, raw: Mapping[str, Any]) -> tuple[str, bool]:
    expected = f"one of {', '.join(BUILTIN_METRICS)} or an import path pkg.module:function"
    text = string(ctx, required(ctx, raw, "metric", "metric", expected), "metric", expected)
    higher = boolean(ctx, raw, "higher_is_better", "higher_is_better", True)
    if text in BUILTIN_METRICS:
        if not higher:
            raise ctx.error("higher_is_better", f"found false: built-in metric {text} is higher-is-better; "
                                                "expected true or no higher_is_better")
        return text, True
    if not IMPORT_PATH.match(text):
        raise ctx.error("metric", f"unknown metric {text!r}: expected {expected}")
    from sweeper.model.intake import resolve_callable  # imports onnx; only needed for user metrics

    resolve_callable(text, ctx.where("metric"))  # fail now, not in a worker
    return text, higher


def _target(ctx: Ctx, raw: Mapping[str, Any]) -> tuple[float, bool]:
    """``target.max_drop`` and ``target.early_stop`` (default true: pass/fail probes stop once they cannot
    meet the target, sweeper.eval.early)."""
    section = mapping(ctx, required(ctx, raw, "target", "target", "a mapping with max_drop"),
                       "target", _TARGET_KEYS)
    expected = "a number >= 0 (the allowed absolute drop, in metric units)"
    value = number(ctx, required(ctx, section, "max_drop", "target.max_drop", expected),
                    "target.max_drop", expected)
    if value < 0:
        raise ctx.error("target.max_drop", f"found {value!r} (negative): expected {expected}")
    return value, boolean(ctx, section, "early_stop", "target.early_stop", True)


def _candidates(ctx: Ctx, raw: Mapping[str, Any]) -> tuple[Precision, ...]:
    value = raw.get("candidates")
    if value is None:
        return tuple(Precision.parse(n) for n in DEFAULT_CANDIDATES)
    if not isinstance(value, list) or not value:
        raise ctx.error("candidates", f"found {describe(value)}: expected a non-empty list of precisions "
                                      "such as [w8a8, w8a16, fp16]")
    out: list[Precision] = []
    for i, item in enumerate(value):
        field = f"candidates[{i}]"
        if not isinstance(item, str):
            raise ctx.error(field, f"found {describe(item)}: expected a precision name such as w8a16 or fp16")
        try:
            p = Precision.parse(item)
        except ValueError as exc:
            raise ctx.error(field, str(exc)) from None
        if p in out:
            raise ctx.error(field, f"{p.name} is listed twice: expected each precision once")
        out.append(p)
    return tuple(out)


def _calibration(ctx: Ctx, raw: Mapping[str, Any]) -> CalibrationSpec:
    value = raw.get("calibration")
    section = {} if value is None else mapping(ctx, value, "calibration", _CALIBRATION_KEYS)
    scheme = section.get("scheme", "minmax")
    if scheme is None:
        scheme = "minmax"
    if scheme not in SCHEMES:
        raise ctx.error("calibration.scheme", f"found {describe(scheme)}: expected one of {', '.join(SCHEMES)}")
    bias = section.get("bias", "int32")
    if bias not in BIAS_MODES:
        raise ctx.error("calibration.bias", f"found {describe(bias)}: expected one of {', '.join(BIAS_MODES)}")
    percentile = DEFAULT_PERCENTILE
    if section.get("percentile") is not None:
        expected = "a number in (0, 100]"
        if scheme != "percentile":
            raise ctx.error("calibration.percentile",
                            f"set with scheme {scheme}: expected percentile only with scheme: percentile")
        percentile = number(ctx, section["percentile"], "calibration.percentile", expected)
        if not 0 < percentile <= 100:
            raise ctx.error("calibration.percentile", f"found {percentile!r}: expected {expected}")
    return CalibrationSpec(
        scheme=scheme,
        percentile=percentile,
        samples=integer(ctx, section, "samples", "calibration.samples", None, 1),
        act_symmetric=boolean(ctx, section, "act_symmetric", "calibration.act_symmetric", False),
        weight_symmetric=boolean(ctx, section, "weight_symmetric", "calibration.weight_symmetric", True),
        per_channel=boolean(ctx, section, "per_channel", "calibration.per_channel", True),
        bias=bias,
    )


def _pool(ctx: Ctx, raw: Mapping[str, Any]) -> str:
    value = raw.get("pool")
    if value is None:
        return DEFAULT_POOL
    if value not in POOLS:
        raise ctx.error("pool", f"found {describe(value)}: expected one of {', '.join(POOLS)}")
    return value


def _output(ctx: Ctx, raw: Mapping[str, Any], name: str) -> Path:
    value = raw.get("output")
    text = f"runs/{name}" if value is None else string(ctx, value, "output", "a directory path")
    out = local_path(ctx, text)  # relative to the experiment file, like model and data
    problem = writable_dir_problem(out)
    if problem:
        raise ctx.error("output", problem)
    return out


def _tracking(ctx: Ctx, raw: Mapping[str, Any]) -> tuple[str | None, str]:
    value = raw.get("tracking")
    if value is None:
        return None, "all"
    section = mapping(ctx, value, "tracking", _TRACKING_KEYS)
    uri = None
    if section.get("uri") is not None:
        uri = string(ctx, section["uri"], "tracking.uri", TRACKING_EXPECTED)
        problem = tracking_uri_problem(uri)
        if problem:
            raise ctx.error("tracking.uri", problem)
    artifacts = "all"
    if section.get("artifacts") is not None:
        artifacts = string(ctx, section["artifacts"], "tracking.artifacts", "all or accepted")
        if artifacts not in ARTIFACT_MODES:
            raise ctx.error("tracking.artifacts", f"found {artifacts!r}: expected all or accepted")
    return uri, artifacts


def _study(ctx: Ctx, raw: Mapping[str, Any]) -> str | None:
    value = raw.get("study")
    if value is None:
        return None
    section = mapping(ctx, value, "study", _STUDY_KEYS)
    if section.get("storage") is None:
        return None
    expected = "an Optuna storage URL such as sqlite:///study.db or postgresql://host/db"
    text = string(ctx, section["storage"], "study.storage", expected)
    if "://" not in text:
        raise ctx.error("study.storage", f"found {text!r}: expected {expected}")
    return text


def _cost(ctx: Ctx, raw: Mapping[str, Any]) -> str:
    value = raw.get("cost")
    if value is None:
        return "npu_generic"
    section = mapping(ctx, value, "cost", _COST_KEYS)
    if section.get("target") is None:
        return "npu_generic"
    text = string(ctx, section["target"], "cost.target", "a bundled target name or a target YAML file")
    from sweeper.cost.latency import load_target

    try:
        load_target(text if not text.endswith((".yaml", ".yml")) else str(ctx.folder / text))
    except ValueError as exc:
        raise ctx.error("cost.target", str(exc)) from None
    return text if not text.endswith((".yaml", ".yml")) else str(ctx.folder / text)


def experiment_from(raw: Any, file: str, p: Path) -> Experiment:
    """The experiment the file ``p`` (as given: ``file``) describes, from its YAML document ``raw``; raise
    :class:`SweeperError` on the first problem."""
    if not isinstance(raw, Mapping):
        found = "an empty file" if raw is None else describe(raw)
        raise SweeperError(file, f"found {found}: expected a YAML mapping of settings ({', '.join(_TOP_KEYS)})")
    ctx = Ctx(file, p.resolve().parent)
    mapping(ctx, raw, "", _TOP_KEYS)
    name = _name(ctx, raw)
    model = _model(ctx, raw)
    data = _data(ctx, raw)
    metric, higher = _metric(ctx, raw)
    batch_size = integer(ctx, raw, "batch_size", "batch_size", DEFAULT_BATCH_SIZE, 1)
    max_drop, early_stop = _target(ctx, raw)
    candidates = _candidates(ctx, raw)
    calibration = _calibration(ctx, raw)
    workers = integer(ctx, raw, "workers", "workers", DEFAULT_WORKERS, 1)
    pool = _pool(ctx, raw)
    threads = integer(ctx, raw, "threads_per_worker", "threads_per_worker", 1, 1)
    reuse_mb = integer(ctx, raw, "reuse_memory_mb", "reuse_memory_mb", DEFAULT_REUSE_MB, 0)
    output = _output(ctx, raw, name)
    tracking_uri, tracking_artifacts = _tracking(ctx, raw)
    study_storage = _study(ctx, raw)
    cost_target = _cost(ctx, raw)
    return Experiment(
        name=name, path=p.resolve(), model=model, data=data, metric=metric, higher_is_better=higher,
        batch_size=batch_size, max_drop=max_drop, candidates=candidates, calibration=calibration,
        workers=workers, pool=pool, threads_per_worker=threads, output=output, tracking_uri=tracking_uri,
        tracking_artifacts=tracking_artifacts, study_storage=study_storage, cost_target=cost_target,
        reuse_memory_mb=reuse_mb, metric_output=_metric_output(ctx, raw), qat=_qat(ctx, raw),
        workflow=_workflow(ctx, raw), rounding=_rounding(ctx, raw), early_stop=early_stop,
    )


def _rounding(ctx: Ctx, raw: Mapping[str, Any]) -> Path | None:
    """``rounding``: the folder ``sweeper adaround`` wrote (or its rounding.npz), relative to this file; every
    step then stores the weights with its learned integers (read when the workspace is built)."""
    value = raw.get("rounding")
    if value is None:
        return None
    p = local_path(ctx, string(ctx, value, "rounding", "an adaround output folder or its rounding.npz"))
    if not p.exists():
        raise ctx.error("rounding", f"not found: {p} (relative paths are relative to {ctx.folder})")
    return p


def _metric_output(ctx: Ctx, raw: Mapping[str, Any]) -> str | None:
    """The output the built-in metrics read; checked against the model when it is loaded."""
    value = raw.get("metric_output")
    return None if value is None else string(ctx, value, "metric_output", "the name of a model output")


def _workflow(ctx: Ctx, raw: Mapping[str, Any]) -> WorkflowSpec:
    """The ``workflow`` section (``sweeper run``)."""
    value = raw.get("workflow")
    if value is None:
        return WorkflowSpec()
    section = mapping(ctx, value, "workflow", _WORKFLOW_KEYS)
    budget = None
    if section.get("latency_budget_ms") is not None:
        budget = number(ctx, section["latency_budget_ms"], "workflow.latency_budget_ms", "milliseconds > 0")
        if budget <= 0:
            raise ctx.error("workflow.latency_budget_ms", f"found {budget!r}: expected milliseconds > 0")
    precs = {}
    for key in ("adaround_precision", "qat_profile"):
        if section.get(key) is not None:
            text = string(ctx, section[key], f"workflow.{key}", "a precision such as w4a8")
            try:
                precs[key] = Precision.parse(text).name
            except ValueError as exc:
                raise ctx.error(f"workflow.{key}", str(exc)) from None
    return WorkflowSpec(latency_budget_ms=budget, adaround=boolean(ctx, section, "adaround", "workflow.adaround", False),
                        adaround_iterations=integer(ctx, section, "adaround_iterations", "workflow.adaround_iterations",
                                                 None, 1),
                        qat=boolean(ctx, section, "qat", "workflow.qat", False), **precs)


def _qat(ctx: Ctx, raw: Mapping[str, Any]) -> QATSpec:
    """The ``qat`` section (data and training function as import paths or .npz files)."""
    value = raw.get("qat")
    if value is None:
        return QATSpec()
    section = mapping(ctx, value, "qat", _QAT_KEYS)
    data = None if section.get("data") is None else _data_source(ctx, section, "data", "qat")
    train = None
    if section.get("train") is not None:
        text = string(ctx, section["train"], "qat.train", "an import path pkg.module:function")
        train = import_path(ctx, text, "qat.train", "an import path pkg.module:function")
    lr = QATSpec.lr
    if section.get("lr") is not None:
        lr = number(ctx, section["lr"], "qat.lr", "a learning rate > 0")
        if lr <= 0:
            raise ctx.error("qat.lr", f"found {lr!r}: expected a learning rate > 0")
    return QATSpec(data=data, train=train, epochs=integer(ctx, section, "epochs", "qat.epochs", QATSpec.epochs, 1),
                   lr=lr, batch_size=integer(ctx, section, "batch_size", "qat.batch_size", QATSpec.batch_size, 1))
