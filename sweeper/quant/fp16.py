"""Float16 as a float16 deployment computes it: values beyond the float16 range saturate to +-65504.

A plain float32 -> float16 cast turns 70000 into inf and a -3.4e38 attention-mask sentinel into -inf (and
``inf - inf`` into NaN further on). Float16 converters for deployment clamp to the largest finite value
instead, so the simulation and the export both clip to ``[-FP16_MAX, FP16_MAX]`` before the cast.

At the other end, a value of magnitude at most ``FP16_FLUSH`` (half the smallest float16 subnormal) becomes
zero: harmless in a sum, fatal where the tensor feeds a Log, a Reciprocal, a Sqrt, a divisor or a Pow
(:mod:`sweeper.quant.keep_float`). Such underflow is reported per tensor, as saturation is.
"""

from __future__ import annotations

import numpy as np

FP16_MAX = float(np.finfo(np.float16).max)  # 65504
FP16_FLUSH = 2.0**-25  # |x| <= this rounds to zero in float16 (half the smallest subnormal, 2**-24)


def to_fp16(x: np.ndarray) -> np.ndarray:
    """``x`` saturated to the float16 range and cast to float16."""
    return np.clip(np.asarray(x, np.float32), -FP16_MAX, FP16_MAX).astype(np.float16)


def fp16_round_trip(x: np.ndarray) -> np.ndarray:
    """``x`` through float16 and back, saturating (what the simulation's and the export's Cast pair do)."""
    return to_fp16(x).astype(np.float32)


def exceeds_fp16(lo: float, hi: float) -> bool:
    """Whether a tensor observed in ``[lo, hi]`` saturates in float16."""
    return max(abs(lo), abs(hi)) > FP16_MAX


def flushed_to_zero(x: np.ndarray) -> int:
    """How many non-zero values of ``x`` become zero in float16."""
    a = np.abs(np.asarray(x, np.float32))
    return int(np.count_nonzero((a > 0) & (a <= FP16_FLUSH)))
