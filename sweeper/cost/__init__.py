"""Cost of a profile: BOPs, model size, and an analytic latency estimate on a YAML-described target."""

from __future__ import annotations

from sweeper.cost.bops import ProfileCost, profile_cost
from sweeper.cost.latency import CostModel, Target, TargetError, list_targets, load_target

__all__ = ["CostModel", "ProfileCost", "Target", "TargetError", "list_targets", "load_target", "profile_cost"]
