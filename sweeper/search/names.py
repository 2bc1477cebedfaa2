"""The names a step's options accept, defined once and importable without the steps themselves (the CLI builds
its parser from them before any step module, with its numpy/ONNX imports, is loaded)."""

from __future__ import annotations

RANKINGS = ("enable_one", "disable_one", "sqnr", "noise")  # sweeper.search.analyzer
ALGORITHMS = ("greedy", "fast", "auto", "optuna", "greedy+optuna", "fast+optuna")  # sweeper.search.amp
COSTS = ("bops", "bytes", "latency")
OBJECTIVES = ("multi", "constrained")

__all__ = ["ALGORITHMS", "COSTS", "OBJECTIVES", "RANKINGS"]
