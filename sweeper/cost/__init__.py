"""Cost of a profile: BOPs, model size (analytic latency estimates come with the cluster issue)."""

from __future__ import annotations

from sweeper.cost.bops import ProfileCost, profile_cost

__all__ = ["ProfileCost", "profile_cost"]
