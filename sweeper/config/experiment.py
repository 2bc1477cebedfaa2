"""The experiment file: read once, validated completely, turned into frozen dataclasses.

Every mistake in the file becomes a :class:`~sweeper.errors.SweeperError` whose ``where`` is
``"<file>: <dotted.field>"`` and whose message says what was found and what is expected, on one line.
Code past :func:`load_experiment` trusts the :class:`Experiment` it gets.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sweeper.errors import SweeperError
from sweeper.eval.metrics import BUILTIN_METRICS
from sweeper.quant.encoding import SCHEMES
from sweeper.quant.precision import DEFAULT_CANDIDATES, Precision

POOLS = ("ray", "local")
DEFAULT_BATCH_SIZE = 256
DEFAULT_WORKERS = 2
DEFAULT_PERCENTILE = 99.99
DEFAULT_REUSE_MB = 2048

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_IMPORT_PATH = re.compile(rf"^{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*$")

_TOP_KEYS = (
    "name", "model", "data", "metric", "higher_is_better", "batch_size", "target", "candidates",
    "calibration", "workers", "pool", "threads_per_worker", "reuse_memory_mb", "output", "tracking", "study",
    "cost", "metric_output", "qat", "workflow", "rounding",
)
_MODEL_KEYS = ("onnx", "torch")
_DATA_KEYS = ("calibration", "evaluation", "load_on_workers")
_TARGET_KEYS = ("max_drop",)
_CALIBRATION_KEYS = ("scheme", "percentile", "samples", "act_symmetric", "weight_symmetric", "per_channel", "bias")
BIAS_MODES = ("int32", "float")
_TRACKING_KEYS = ("uri", "artifacts")
_STUDY_KEYS = ("storage",)
_COST_KEYS = ("target",)
_QAT_KEYS = ("data", "train", "epochs", "lr", "batch_size")
ARTIFACT_MODES = ("all", "accepted")


@dataclass(frozen=True)
class ModelSpec:
    """Exactly one is set: an existing ONNX file (absolute path), an import path of a function that returns
    the path of an ONNX file (``onnx_factory``, e.g. an example that exports itself once), or a torch factory."""

    onnx: Path | None
    torch: str | None
    onnx_factory: str | None = None


@dataclass(frozen=True)
class DataSpec:
    """Each is an absolute path to an existing ``.npz`` file or a ``pkg.module:function`` import path."""

    calibration: Any
    evaluation: Any
    load_on_workers: bool = False  # each worker calls the evaluation loader itself (large data: no second copy)


@dataclass(frozen=True)
class CalibrationSpec:
    scheme: str = "minmax"
    percentile: float = DEFAULT_PERCENTILE
    samples: int | None = None
    act_symmetric: bool = False
    weight_symmetric: bool = True
    per_channel: bool = True
    bias: str = "int32"  # int32 at input scale x weight scale, or float (as AIMET's sim and default export)


@dataclass(frozen=True)
class QATSpec:
    """Quantization-aware training (``sweeper qat``): labelled training data (default: the calibration data),
    a training function ``pkg.module:fn(model, data, settings)`` (default: cross-entropy), and its settings."""

    data: str | None = None
    train: str | None = None
    epochs: int = 4
    lr: float = 1e-4
    batch_size: int = 64


@dataclass(frozen=True)
class WorkflowSpec:
    """How ``sweeper run`` walks the steps (:mod:`sweeper.search.workflow`): an optional latency budget for
    Step 2's answer (estimated ms per sample), and whether Steps 4 (AdaRound) and 5 (QAT) may run."""

    latency_budget_ms: float | None = None
    adaround: bool = False
    adaround_precision: str | None = None  # default: the failing weight precision the rules find
    adaround_iterations: int | None = None
    qat: bool = False
    qat_profile: str | None = None  # default: the cheapest candidate that failed Step 1


_WORKFLOW_KEYS = tuple(f.name for f in dataclasses.fields(WorkflowSpec))


@dataclass(frozen=True)
class Experiment:
    name: str
    path: Path  # the experiment file, absolute
    model: ModelSpec
    data: DataSpec
    metric: str  # a built-in metric name or a resolved-once pkg.module:function
    higher_is_better: bool
    batch_size: int
    max_drop: float
    candidates: tuple[Precision, ...]
    calibration: CalibrationSpec
    workers: int
    pool: str
    threads_per_worker: int
    output: Path  # absolute; not created at load time
    tracking_uri: str | None  # None: MLFLOW_TRACKING_URI or sqlite:///mlflow.db (see sweeper.tracking)
    tracking_artifacts: str = "all"  # "all" profiles, or only "accepted" ones (large models)
    study_storage: str | None = None  # Optuna storage URL; None: SWEEPER_STUDY_STORAGE or OUTPUT/study.db
    cost_target: str = "npu_generic"  # CostModel target (bundled name or YAML path) for est_latency_ms
    reuse_memory_mb: int = DEFAULT_REUSE_MB  # per worker, for prefix reuse (sweeper.sim.reuse); 0 turns it off
    metric_output: str | None = None  # the model output the built-in metrics read (default: the first)
    qat: QATSpec = QATSpec()  # quantization-aware training settings
    workflow: WorkflowSpec = WorkflowSpec()  # sweeper run's rules
    rounding: Path | None = None  # AdaRound's learned weights (an adaround folder or its rounding.npz)


# ----------------------------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.2; PyYAML's 1.1 rules make it a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _check_duplicates(node: yaml.Node, file: str, prefix: str = "") -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            dotted = f"{prefix}{key}"
            if key is not None:
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise SweeperError(
                        f"{file}: {dotted}",
                        f"key {key!r} appears twice (lines {seen[key]} and {line}): expected each key once",
                    )
                seen[key] = line
            _check_duplicates(value_node, file, f"{dotted}.")
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicates(item, file, f"{prefix[:-1]}[{i}].")


def _read_yaml(path: Path, file: str) -> Any:
    if not path.exists():
        raise SweeperError(file, "experiment file not found: expected an existing YAML file")
    if not path.is_file():
        raise SweeperError(file, "is not a file: expected a YAML experiment file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SweeperError(file, f"cannot read the experiment file ({type(exc).__name__}: {exc})") from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_duplicates(node, file)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise SweeperError(file, f"not valid YAML: {problem}{at}") from None
    finally:
        loader.dispose()


# ------------------------------------------------------------------------------------------ helpers


def _describe(value: Any) -> str:
    """How a YAML value is shown in messages: the value and its YAML kind."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, (int, float)):
        return f"{value!r} (a number)"
    if isinstance(value, str):
        return f"{value!r} (a string)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{value!r} ({type(value).__name__})"


class _Ctx:
    """Where errors point: the experiment file as given, and its folder for relative paths."""

    def __init__(self, file: str, folder: Path) -> None:
        self.file = file
        self.folder = folder

    def where(self, field: str) -> str:
        return f"{self.file}: {field}"

    def error(self, field: str, message: str) -> SweeperError:
        return SweeperError(self.where(field), message)


def _mapping(ctx: _Ctx, value: Any, field: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ctx.error(field, f"found {_describe(value)}: expected a mapping with keys {', '.join(allowed)}")
    for key in value:
        if key not in allowed:
            dotted = f"{field}.{key}" if field else str(key)
            raise ctx.error(dotted, f"unknown key {key!r}: expected one of {', '.join(allowed)}")
    return value


def _required(ctx: _Ctx, section: Mapping[str, Any], key: str, field: str, hint: str) -> Any:
    if key not in section or section[key] is None:
        raise ctx.error(field, f"missing: expected {hint}")
    return section[key]


def _string(ctx: _Ctx, value: Any, field: str, expected: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ctx.error(field, f"found {_describe(value)}: expected {expected}")
    return value.strip()


def _bool(ctx: _Ctx, section: Mapping[str, Any], key: str, field: str, default: bool) -> bool:
    value = section.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ctx.error(field, f"found {_describe(value)}: expected true or false")
    return value


def _int(ctx: _Ctx, section: Mapping[str, Any], key: str, field: str, default: int | None, minimum: int) -> Any:
    value = section.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ctx.error(field, f"found {_describe(value)}: expected {what}")
    return value


def _number(ctx: _Ctx, value: Any, field: str, expected: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ctx.error(field, f"found {_describe(value)}: expected {expected}")
    return float(value)


def _local_path(ctx: _Ctx, text: str) -> Path:
    p = Path(os.path.expanduser(text))
    if not p.is_absolute():
        p = ctx.folder / p
    return Path(os.path.normpath(p))


def _existing_file(ctx: _Ctx, text: str, field: str, what: str) -> Path:
    p = _local_path(ctx, text)
    if not p.exists():
        raise ctx.error(field, f"{what} not found: {p} (relative paths are relative to {ctx.folder})")
    if not p.is_file() or not os.access(p, os.R_OK):
        raise ctx.error(field, f"{what} is not a readable file: {p}")
    return p


def _import_path(ctx: _Ctx, text: str, field: str, expected: str) -> str:
    if not _IMPORT_PATH.match(text):
        raise ctx.error(field, f"found {text!r}: expected {expected}")
    return text


# --------------------------------------------------------------------------------------- sections


def _name(ctx: _Ctx, raw: Mapping[str, Any]) -> str:
    value = _required(ctx, raw, "name", "name", "a name made of letters, digits, '_', '.' and '-'")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _NAME.match(value):
        raise ctx.error("name", f"found {_describe(value)}: expected letters, digits, '_', '.' and '-' only")
    return value


def _model(ctx: _Ctx, raw: Mapping[str, Any]) -> ModelSpec:
    section = _mapping(ctx, _required(ctx, raw, "model", "model", "a mapping with onnx or torch"),
                       "model", _MODEL_KEYS)
    given = [k for k in _MODEL_KEYS if section.get(k) is not None]
    if len(given) != 1:
        found = "both onnx and torch" if len(given) == 2 else "neither"
        raise ctx.error("model", f"found {found}: expected exactly one of onnx (a .onnx file) "
                                 "or torch (pkg.module:factory)")
    if given[0] == "onnx":
        text = _string(ctx, section["onnx"], "model.onnx", "a path to a .onnx file")
        if _IMPORT_PATH.match(text) and not text.endswith(".onnx"):
            return ModelSpec(onnx=None, torch=None, onnx_factory=text)
        return ModelSpec(onnx=_existing_file(ctx, text, "model.onnx", "model file"), torch=None)
    text = _string(ctx, section["torch"], "model.torch", "an import path pkg.module:factory")
    return ModelSpec(onnx=None, torch=_import_path(ctx, text, "model.torch",
                                                   "an import path pkg.module:factory"))


def _data_source(ctx: _Ctx, section: Mapping[str, Any], key: str, prefix: str = "data") -> str:
    field = f"{prefix}.{key}"
    expected = "a .npz file or an import path pkg.module:function"
    text = _string(ctx, _required(ctx, section, key, field, expected), field, expected)
    if text.lower().endswith(".npz"):
        return str(_existing_file(ctx, text, field, "data file"))
    if _IMPORT_PATH.match(text):
        return text
    raise ctx.error(field, f"found {text!r}: expected {expected}")


def _data(ctx: _Ctx, raw: Mapping[str, Any]) -> DataSpec:
    section = _mapping(ctx, _required(ctx, raw, "data", "data", "a mapping with calibration and evaluation"),
                       "data", _DATA_KEYS)
    return DataSpec(calibration=_data_source(ctx, section, "calibration"),
                    evaluation=_data_source(ctx, section, "evaluation"),
                    load_on_workers=_bool(ctx, section, "load_on_workers", "data.load_on_workers", False))


def _metric(ctx: _Ctx, raw: Mapping[str, Any]) -> tuple[str, bool]:
    expected = f"one of {', '.join(BUILTIN_METRICS)} or an import path pkg.module:function"
    text = _string(ctx, _required(ctx, raw, "metric", "metric", expected), "metric", expected)
    higher = _bool(ctx, raw, "higher_is_better", "higher_is_better", True)
    if text in BUILTIN_METRICS:
        if not higher:
            raise ctx.error("higher_is_better", f"found false: built-in metric {text} is higher-is-better; "
                                                "expected true or no higher_is_better")
        return text, True
    if not _IMPORT_PATH.match(text):
        raise ctx.error("metric", f"unknown metric {text!r}: expected {expected}")
    from sweeper.model.intake import resolve_callable  # imports onnx; only needed for user metrics

    resolve_callable(text, ctx.where("metric"))  # fail now, not in a worker
    return text, higher


def _max_drop(ctx: _Ctx, raw: Mapping[str, Any]) -> float:
    section = _mapping(ctx, _required(ctx, raw, "target", "target", "a mapping with max_drop"),
                       "target", _TARGET_KEYS)
    expected = "a number >= 0 (the allowed absolute drop, in metric units)"
    value = _number(ctx, _required(ctx, section, "max_drop", "target.max_drop", expected),
                    "target.max_drop", expected)
    if value < 0:
        raise ctx.error("target.max_drop", f"found {value!r} (negative): expected {expected}")
    return value


def _candidates(ctx: _Ctx, raw: Mapping[str, Any]) -> tuple[Precision, ...]:
    value = raw.get("candidates")
    if value is None:
        return tuple(Precision.parse(n) for n in DEFAULT_CANDIDATES)
    if not isinstance(value, list) or not value:
        raise ctx.error("candidates", f"found {_describe(value)}: expected a non-empty list of precisions "
                                      "such as [w8a8, w8a16, fp16]")
    out: list[Precision] = []
    for i, item in enumerate(value):
        field = f"candidates[{i}]"
        if not isinstance(item, str):
            raise ctx.error(field, f"found {_describe(item)}: expected a precision name such as w8a16 or fp16")
        try:
            p = Precision.parse(item)
        except ValueError as exc:
            raise ctx.error(field, str(exc)) from None
        if p in out:
            raise ctx.error(field, f"{p.name} is listed twice: expected each precision once")
        out.append(p)
    return tuple(out)


def _calibration(ctx: _Ctx, raw: Mapping[str, Any]) -> CalibrationSpec:
    value = raw.get("calibration")
    section = {} if value is None else _mapping(ctx, value, "calibration", _CALIBRATION_KEYS)
    scheme = section.get("scheme", "minmax")
    if scheme is None:
        scheme = "minmax"
    if scheme not in SCHEMES:
        raise ctx.error("calibration.scheme", f"found {_describe(scheme)}: expected one of {', '.join(SCHEMES)}")
    bias = section.get("bias", "int32")
    if bias not in BIAS_MODES:
        raise ctx.error("calibration.bias", f"found {_describe(bias)}: expected one of {', '.join(BIAS_MODES)}")
    percentile = DEFAULT_PERCENTILE
    if section.get("percentile") is not None:
        expected = "a number in (0, 100]"
        if scheme != "percentile":
            raise ctx.error("calibration.percentile",
                            f"set with scheme {scheme}: expected percentile only with scheme: percentile")
        percentile = _number(ctx, section["percentile"], "calibration.percentile", expected)
        if not 0 < percentile <= 100:
            raise ctx.error("calibration.percentile", f"found {percentile!r}: expected {expected}")
    return CalibrationSpec(
        scheme=scheme,
        percentile=percentile,
        samples=_int(ctx, section, "samples", "calibration.samples", None, 1),
        act_symmetric=_bool(ctx, section, "act_symmetric", "calibration.act_symmetric", False),
        weight_symmetric=_bool(ctx, section, "weight_symmetric", "calibration.weight_symmetric", True),
        per_channel=_bool(ctx, section, "per_channel", "calibration.per_channel", True),
        bias=bias,
    )


def _pool(ctx: _Ctx, raw: Mapping[str, Any]) -> str:
    value = raw.get("pool")
    if value is None:
        return "ray"
    if value not in POOLS:
        raise ctx.error("pool", f"found {_describe(value)}: expected one of {', '.join(POOLS)}")
    return value


def writable_dir_problem(out: Path) -> str | None:
    """Why ``out`` (absolute) cannot be used as an output directory, or None: it must be a directory, or not
    exist yet under a writable directory."""
    if out.exists() and not out.is_dir():
        return f"{out} is a file: expected a directory (existing or to be created)"
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot create {out}: {parent} is a file, expected a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        what = "it is read-only" if parent == out else f"its nearest existing parent {parent} is read-only"
        return f"{out} is not writable ({what}): expected a writable directory"
    return None


def _output(ctx: _Ctx, raw: Mapping[str, Any], name: str) -> Path:
    value = raw.get("output")
    text = f"runs/{name}" if value is None else _string(ctx, value, "output", "a directory path")
    out = _local_path(ctx, text)  # relative to the experiment file, like model and data
    problem = writable_dir_problem(out)
    if problem:
        raise ctx.error("output", problem)
    return out


TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "databricks-uc", "uc")
_TRACKING_EXPECTED = "an MLflow tracking URI such as sqlite:///mlflow.db, postgresql://host/db or http://host:5000"


def tracking_uri_problem(uri: str) -> str | None:
    """Why MLflow could not use ``uri`` as sweeper's tracking store, or None. A bare folder (MLflow's file store,
    in maintenance mode since MLflow 3) and unknown schemes are refused; a SQLite file needs a folder that exists or
    can be created."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.split("+")[0] not in TRACKING_SCHEMES:
        return f"found {uri!r}: expected {_TRACKING_EXPECTED}"
    if scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            return f"found {uri!r}: expected sqlite:///relative/file.db or sqlite:////absolute/file.db"
        db = Path(os.path.abspath(Path(rest[1:]).expanduser()))
        if db.is_dir():
            return f"found {uri!r}: {db} is a directory, expected a SQLite database file"
        problem = writable_dir_problem(db.parent)
        if problem:
            return f"found {uri!r}: the folder of the SQLite file cannot be used ({problem})"
    return None


def _tracking(ctx: _Ctx, raw: Mapping[str, Any]) -> tuple[str | None, str]:
    value = raw.get("tracking")
    if value is None:
        return None, "all"
    section = _mapping(ctx, value, "tracking", _TRACKING_KEYS)
    uri = None
    if section.get("uri") is not None:
        uri = _string(ctx, section["uri"], "tracking.uri", _TRACKING_EXPECTED)
        problem = tracking_uri_problem(uri)
        if problem:
            raise ctx.error("tracking.uri", problem)
    artifacts = "all"
    if section.get("artifacts") is not None:
        artifacts = _string(ctx, section["artifacts"], "tracking.artifacts", "all or accepted")
        if artifacts not in ARTIFACT_MODES:
            raise ctx.error("tracking.artifacts", f"found {artifacts!r}: expected all or accepted")
    return uri, artifacts


def _study(ctx: _Ctx, raw: Mapping[str, Any]) -> str | None:
    value = raw.get("study")
    if value is None:
        return None
    section = _mapping(ctx, value, "study", _STUDY_KEYS)
    if section.get("storage") is None:
        return None
    expected = "an Optuna storage URL such as sqlite:///study.db or postgresql://host/db"
    text = _string(ctx, section["storage"], "study.storage", expected)
    if "://" not in text:
        raise ctx.error("study.storage", f"found {text!r}: expected {expected}")
    return text


def _cost(ctx: _Ctx, raw: Mapping[str, Any]) -> str:
    value = raw.get("cost")
    if value is None:
        return "npu_generic"
    section = _mapping(ctx, value, "cost", _COST_KEYS)
    if section.get("target") is None:
        return "npu_generic"
    text = _string(ctx, section["target"], "cost.target", "a bundled target name or a target YAML file")
    from sweeper.cost.latency import load_target

    try:
        load_target(text if not text.endswith((".yaml", ".yml")) else str(ctx.folder / text))
    except ValueError as exc:
        raise ctx.error("cost.target", str(exc)) from None
    return text if not text.endswith((".yaml", ".yml")) else str(ctx.folder / text)


def load_experiment(path: str | os.PathLike[str]) -> Experiment:
    """Read and validate an experiment file; raise :class:`SweeperError` on the first problem."""
    file = os.fspath(path)
    p = Path(file).expanduser()
    raw = _read_yaml(p, file)
    if not isinstance(raw, Mapping):
        found = "an empty file" if raw is None else _describe(raw)
        raise SweeperError(file, f"found {found}: expected a YAML mapping of settings ({', '.join(_TOP_KEYS)})")
    ctx = _Ctx(file, p.resolve().parent)
    _mapping(ctx, raw, "", _TOP_KEYS)
    name = _name(ctx, raw)
    model = _model(ctx, raw)
    data = _data(ctx, raw)
    metric, higher = _metric(ctx, raw)
    batch_size = _int(ctx, raw, "batch_size", "batch_size", DEFAULT_BATCH_SIZE, 1)
    max_drop = _max_drop(ctx, raw)
    candidates = _candidates(ctx, raw)
    calibration = _calibration(ctx, raw)
    workers = _int(ctx, raw, "workers", "workers", DEFAULT_WORKERS, 1)
    pool = _pool(ctx, raw)
    threads = _int(ctx, raw, "threads_per_worker", "threads_per_worker", 1, 1)
    reuse_mb = _int(ctx, raw, "reuse_memory_mb", "reuse_memory_mb", DEFAULT_REUSE_MB, 0)
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
        workflow=_workflow(ctx, raw), rounding=_rounding(ctx, raw),
    )


def _rounding(ctx: _Ctx, raw: Mapping[str, Any]) -> Path | None:
    """``rounding``: the folder ``sweeper adaround`` wrote (or its rounding.npz), relative to this file; every
    step then stores the weights with its learned integers (read when the workspace is built)."""
    value = raw.get("rounding")
    if value is None:
        return None
    p = _local_path(ctx, _string(ctx, value, "rounding", "an adaround output folder or its rounding.npz"))
    if not p.exists():
        raise ctx.error("rounding", f"not found: {p} (relative paths are relative to {ctx.folder})")
    return p


def _metric_output(ctx: _Ctx, raw: Mapping[str, Any]) -> str | None:
    """The output the built-in metrics read; checked against the model when it is loaded."""
    value = raw.get("metric_output")
    return None if value is None else _string(ctx, value, "metric_output", "the name of a model output")


def _workflow(ctx: _Ctx, raw: Mapping[str, Any]) -> WorkflowSpec:
    """The ``workflow`` section (``sweeper run``)."""
    value = raw.get("workflow")
    if value is None:
        return WorkflowSpec()
    section = _mapping(ctx, value, "workflow", _WORKFLOW_KEYS)
    budget = None
    if section.get("latency_budget_ms") is not None:
        budget = _number(ctx, section["latency_budget_ms"], "workflow.latency_budget_ms", "milliseconds > 0")
        if budget <= 0:
            raise ctx.error("workflow.latency_budget_ms", f"found {budget!r}: expected milliseconds > 0")
    precs = {}
    for key in ("adaround_precision", "qat_profile"):
        if section.get(key) is not None:
            text = _string(ctx, section[key], f"workflow.{key}", "a precision such as w4a8")
            try:
                precs[key] = Precision.parse(text).name
            except ValueError as exc:
                raise ctx.error(f"workflow.{key}", str(exc)) from None
    return WorkflowSpec(latency_budget_ms=budget, adaround=_bool(ctx, section, "adaround", "workflow.adaround", False),
                        adaround_iterations=_int(ctx, section, "adaround_iterations", "workflow.adaround_iterations",
                                                 None, 1),
                        qat=_bool(ctx, section, "qat", "workflow.qat", False), **precs)


def _qat(ctx: _Ctx, raw: Mapping[str, Any]) -> QATSpec:
    """The ``qat`` section (data and training function as import paths or .npz files)."""
    value = raw.get("qat")
    if value is None:
        return QATSpec()
    section = _mapping(ctx, value, "qat", _QAT_KEYS)
    data = None if section.get("data") is None else _data_source(ctx, section, "data", "qat")
    train = None
    if section.get("train") is not None:
        text = _string(ctx, section["train"], "qat.train", "an import path pkg.module:function")
        train = _import_path(ctx, text, "qat.train", "an import path pkg.module:function")
    lr = QATSpec.lr
    if section.get("lr") is not None:
        lr = _number(ctx, section["lr"], "qat.lr", "a learning rate > 0")
        if lr <= 0:
            raise ctx.error("qat.lr", f"found {lr!r}: expected a learning rate > 0")
    return QATSpec(data=data, train=train, epochs=_int(ctx, section, "epochs", "qat.epochs", QATSpec.epochs, 1),
                   lr=lr, batch_size=_int(ctx, section, "batch_size", "qat.batch_size", QATSpec.batch_size, 1))
