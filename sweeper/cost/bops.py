"""BOPs (MACs x weight bits x activation bits, float16 counted as 16 x 16 as AIMET does) and model size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sweeper.model.graph import ModelGraph
from sweeper.quant.precision import FP32, Precision
from sweeper.quant.profile import Profile


@dataclass(frozen=True)
class ProfileCost:
    bops: float
    bops_ratio: float  # relative to uniform w8a8
    size_mb: float  # weights at their bit widths (biases at 32 bits)


def _group_bits(prec: Precision) -> tuple[int, int]:
    return prec.weight_bits, prec.act_bits


def profile_cost(graph: ModelGraph, profile: Profile) -> ProfileCost:
    bops = 0.0
    ref = 0.0
    size_bits = 0.0
    for g in graph.groups:
        prec = profile[g.name] if g.name in dict(profile.assignment) else FP32
        w_bits, a_bits = _group_bits(prec)
        bops += g.macs * w_bits * a_bits
        ref += g.macs * 8 * 8
        size_bits += graph.weight_count(g.weights) * w_bits
    quantized = set(graph.weight_quantizers)
    for name, init in graph.initializers.items():
        if name not in quantized and init.data_type == 1:
            size_bits += int(np.prod(init.dims)) * 32
    return ProfileCost(bops=bops, bops_ratio=bops / ref if ref else 1.0, size_mb=size_bits / 8 / 1e6)
