"""Strategies that propose profiles: Step 1 baseline (more to come: analyzer, LiteMP, AMP)."""

from __future__ import annotations
