"""Evaluation: data loading and checks, metrics."""

from sweeper.eval.data import check_data, input_specs_from_onnx, load_data
from sweeper.eval.metrics import BUILTIN_METRICS, Evaluator, make_evaluator, reference_outputs

__all__ = [
    "BUILTIN_METRICS", "Evaluator", "check_data", "input_specs_from_onnx", "load_data", "make_evaluator",
    "reference_outputs",
]
