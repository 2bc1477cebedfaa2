"""What an experiment is: the frozen dataclasses :func:`~sweeper.config.experiment.load_experiment` returns
(and :func:`sweeper.api.experiment` builds in code) and the defaults of their settings. Code past loading
trusts them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper.quant.precision import Precision

POOLS = ("ray", "local")
DEFAULT_POOL = "ray"  # the experiment file's and the Python API's default
DEFAULT_BATCH_SIZE = 256
DEFAULT_WORKERS = 2
DEFAULT_PERCENTILE = 99.99
DEFAULT_REUSE_MB = 2048

BIAS_MODES = ("int32", "float")
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
    early_stop: bool = True  # target.early_stop: pass/fail probes stop once they cannot meet the target
