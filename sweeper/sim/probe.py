"""Per-layer SQNR probes: how far one layer's output moves from FP32 under a profile.

The analysis (``sweeper analyze``) ranks groups by the SQNR of their layer output with only that group
quantized. A :class:`LayerProbe` is a second simulation that exposes every group's layer output (the tensors
of :func:`sweeper.sim.quantsim.probe_tensor`) and keeps their FP32 values on one calibration batch, so each
probe is one run of that batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from sweeper.model.graph import ModelGraph
from sweeper.quant.precision import FP32, Precision
from sweeper.quant.profile import Profile
from sweeper.sim.encodings import EncodingTable
from sweeper.sim.quantsim import QuantSim

SQNR_CAP_DB = 100.0  # identical outputs (no noise) read as this, so rankings and plots stay finite


def sqnr_db(reference: np.ndarray, value: np.ndarray) -> float:
    """10 log10(signal / noise) of ``value`` against ``reference``, capped at :data:`SQNR_CAP_DB`."""
    ref = reference.astype(np.float64)
    noise = float(np.sum((ref - value.astype(np.float64)) ** 2))
    if noise == 0.0:
        return SQNR_CAP_DB
    signal = float(np.sum(ref ** 2))
    return float(min(SQNR_CAP_DB, 10.0 * np.log10(max(signal, 1e-30) / noise)))


class LayerProbe:
    """A simulation exposing ``tensors`` and their FP32 values on ``batch`` (built once per worker)."""

    def __init__(self, graph: ModelGraph, table: EncodingTable, tensors: Iterable[str],
                 batch: Mapping[str, np.ndarray], threads: int = 1,
                 precisions: Iterable[Precision | str] | None = None) -> None:
        self.tensors = tuple(tensors)
        self.batch = dict(batch)
        self.sim = QuantSim(graph, table, threads=threads, precisions=precisions, extra_outputs=self.tensors)
        self.sim.apply(Profile.uniform([g.name for g in graph.groups], FP32))
        outs = self.sim.run_named(self.batch)
        self.reference = {t: outs[t] for t in self.tensors}

    def sqnr(self, profile: Profile, tensor: str) -> float:
        """SQNR (dB) of ``tensor`` under ``profile`` against FP32, on the probe batch."""
        self.sim.apply(profile)
        return sqnr_db(self.reference[tensor], self.sim.run_named(self.batch)[tensor])


__all__ = ["SQNR_CAP_DB", "LayerProbe", "sqnr_db"]
