"""Reports: plots and self-contained HTML pages written next to a step's results."""

from __future__ import annotations

from typing import Any

from sweeper.report.sensitivity import write_sensitivity_report
from sweeper.report.sensitivity_view import shorten_names


def render_plot(doc: dict[str, Any], name: str) -> bytes | None:
    """One plot of a step's report as PNG bytes: ``amp_pareto`` or a sensitivity report plot (workers draw
    them in parallel: :meth:`sweeper.replica.Replica.render_plot`)."""
    if name == "amp_pareto":
        from sweeper.report.amp import render_pareto

        return render_pareto(doc)
    from sweeper.report.sensitivity_plots import render_plot as sensitivity_plot

    return sensitivity_plot(doc, name)


__all__ = ["render_plot", "shorten_names", "write_sensitivity_report"]
