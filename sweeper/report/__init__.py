"""Reports: plots and self-contained HTML pages written next to a step's results."""

from __future__ import annotations

from sweeper.report.sensitivity import shorten_names, write_sensitivity_report

__all__ = ["shorten_names", "write_sensitivity_report"]
