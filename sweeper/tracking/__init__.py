"""MLflow tracking: the only package that imports mlflow."""

from __future__ import annotations

from sweeper.tracking.tracker import Tracker

__all__ = ["Tracker"]
