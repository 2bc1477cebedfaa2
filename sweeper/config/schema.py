"""JSON Schema of the experiment file, for editors (completion, validation while typing).

The validator in :mod:`sweeper.config.sections` stays the authority (it checks what a schema cannot:
files exist, import paths import, the output folder is writable); this schema describes the same keys, and
a test keeps the two in step. ``sweeper schema`` prints it; an editor points at it with a modeline such as
``# yaml-language-server: $schema=experiment.schema.json``.
"""

from __future__ import annotations

from typing import Any

from sweeper.config import spec as cfg
from sweeper.eval.metrics import BUILTIN_METRICS
from sweeper.quant.encoding import SCHEMES
from sweeper.quant.precision import DEFAULT_CANDIDATES

PRECISION = {"type": "string", "pattern": r"^(w(2|4|8|16)a(2|4|8|16|32)|w32a(2|4|8|16)|fp16|fp32)$",
             "description": "wXaY (X, Y in 2, 4, 8, 16; 32 = left float) or fp16"}
IMPORT_PATH = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_.]*$"
DATA = {"type": "string", "description": "a .npz file (keys = input names, plus labels) or pkg.module:function "
                                         "returning a dict of arrays or a list of feed dicts"}


def _obj(props: dict[str, Any], required: tuple[str, ...] = (), description: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        out["required"] = list(required)
    if description:
        out["description"] = description
    return out


def experiment_schema() -> dict[str, Any]:
    """The schema (draft 2020-12) of an experiment YAML file."""
    props: dict[str, Any] = {
        "name": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]+$", "description": "MLflow experiment and folder name"},
        "model": {**_obj({"onnx": {"type": "string", "description": "a .onnx file, or pkg.module:function "
                                                                   "returning its path"},
                          "torch": {"type": "string", "pattern": IMPORT_PATH,
                                    "description": "pkg.module:factory returning (torch.nn.Module, example_input)"}},
                         description="exactly one of onnx or torch"),
                  "minProperties": 1, "maxProperties": 1},
        "data": _obj({"calibration": DATA, "evaluation": DATA, "load_on_workers": {
            "type": "boolean", "default": False,
            "description": "each worker calls the evaluation loader itself (data too large to hold twice)"}},
            ("calibration", "evaluation")),
        "metric": {"anyOf": [{"enum": list(BUILTIN_METRICS)}, {"type": "string", "pattern": IMPORT_PATH}],
                   "description": "top1 | cosine | sqnr, or pkg.module:fn called as fn(run, data)"},
        "metric_output": {"type": "string", "description": "the model output the built-in metrics read "
                                                           "(default: the first)"},
        "rounding": {"type": "string", "description": "AdaRound's learned weights: the adaround output folder or its "
                                                      "rounding.npz (relative to this file)"},
        "higher_is_better": {"type": "boolean", "default": True},
        "batch_size": {"type": "integer", "minimum": 1, "default": cfg.DEFAULT_BATCH_SIZE},
        "target": _obj({"max_drop": {"type": "number", "minimum": 0,
                                     "description": "allowed absolute drop vs FP32, in metric units"},
                        "early_stop": {"type": "boolean", "default": True,
                                       "description": "stop evaluating a profile (Step 1 candidates, LiteMP and "
                                                      "AMP pass/fail probes) once it cannot meet the target"}},
                       ("max_drop",)),
        "candidates": {"type": "array", "items": PRECISION, "minItems": 1, "uniqueItems": True,
                       "default": list(DEFAULT_CANDIDATES)},
        "calibration": _obj({
            "scheme": {"enum": list(SCHEMES), "default": "minmax"},
            "percentile": {"type": "number", "exclusiveMinimum": 0, "maximum": 100, "default": cfg.DEFAULT_PERCENTILE},
            "samples": {"type": "integer", "minimum": 1, "description": "calibration samples (or feeds) to use"},
            "act_symmetric": {"type": "boolean", "default": False},
            "weight_symmetric": {"type": "boolean", "default": True},
            "per_channel": {"type": "boolean", "default": True},
            "bias": {"enum": list(cfg.BIAS_MODES), "default": "int32"},
        }),
        "workers": {"type": "integer", "minimum": 1, "default": cfg.DEFAULT_WORKERS},
        "pool": {"enum": list(cfg.POOLS), "default": cfg.DEFAULT_POOL},
        "threads_per_worker": {"type": "integer", "minimum": 1, "default": 1},
        "reuse_memory_mb": {"type": "integer", "minimum": 0, "default": cfg.DEFAULT_REUSE_MB,
                            "description": "per worker, for prefix reuse; 0 turns it off"},
        "output": {"type": "string", "description": "output folder (default runs/<name>)"},
        "tracking": _obj({"uri": {"type": "string", "description": "MLflow tracking URI"},
                          "artifacts": {"enum": list(cfg.ARTIFACT_MODES), "default": "all"}}),
        "study": _obj({"storage": {"type": "string", "description": "Optuna storage URL"}}),
        "cost": _obj({"target": {"type": "string", "description": "npu_generic | cpu_x86 | a target YAML file"}}),
        "qat": _obj({"data": {**DATA, "description": "labelled training data for QAT (default: the calibration data)"},
                     "train": {"type": "string", "pattern": IMPORT_PATH,
                               "description": "pkg.module:fn(model, data, settings) training the QAT model in place"},
                     "epochs": {"type": "integer", "minimum": 1, "default": cfg.QATSpec.epochs},
                     "lr": {"type": "number", "exclusiveMinimum": 0, "default": cfg.QATSpec.lr},
                     "batch_size": {"type": "integer", "minimum": 1, "default": cfg.QATSpec.batch_size}},
                    description="quantization-aware training (sweeper qat)"),
        "workflow": _obj({
            "latency_budget_ms": {"type": "number", "exclusiveMinimum": 0,
                                  "description": "Step 2 stops only when its profile is estimated this fast"},
            "adaround": {"type": "boolean", "default": False,
                         "description": "Step 4 (AdaRound) when the weights are the sensitive part"},
            "adaround_precision": {**PRECISION, "description": "default: the failing weight precision"},
            "adaround_iterations": {"type": "integer", "minimum": 1},
            "qat": {"type": "boolean", "default": False, "description": "Step 5 (QAT) for a PyTorch model"},
            "qat_profile": {**PRECISION, "description": "default: the cheapest candidate that failed Step 1"}},
            description="how sweeper run walks the steps"),
    }
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "sweeper experiment",
            **_obj(props, ("name", "model", "data", "metric", "target"))}
