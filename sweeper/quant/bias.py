"""Int32 biases as a deployment stores them: the one rule the simulation and the export share.

A Conv/Gemm bias is stored as int32 at scale ``input scale x weight scale`` (per output channel), so the
integer accumulator can add it directly. At 16-bit activations and weights that scale is about 1e-10 and a
BatchNorm-folded bias of 0.5 needs 5e9 > 2**31 - 1: rounding it on that grid would saturate. Deployment
toolchains then keep a larger scale for that channel (the bias gets its own DequantizeLinear scale and is
requantized into the accumulator) instead of clipping. sweeper does the same: a channel whose bias does not
fit keeps ``|b| / 2**30`` as its scale (30 bits of resolution, far finer than the layer's output grid), and
the channel is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
_FIT = float(2**30)  # a rescaled channel's largest |q|: a wide margin below INT32_MAX after float rounding


@dataclass(frozen=True)
class BiasEncoding:
    """An int32 bias: ``value = q * scale`` (zero point 0), computed as DequantizeLinear computes it."""

    q: np.ndarray  # int64 values, all within int32
    scale: np.ndarray  # float32, one per channel or a single one
    nominal_scale: np.ndarray  # input scale x weight scale
    rescaled: np.ndarray  # bool per entry of ``scale``: enlarged because the bias did not fit

    def dequantize(self) -> np.ndarray:
        scale = self.scale if self.scale.size > 1 else self.scale.reshape(())
        return (self.q.astype(np.float32) * scale).astype(np.float32)

    @property
    def n_rescaled(self) -> int:
        return int(self.rescaled.sum())

    def report(self, bias: str, layer: str) -> dict[str, object]:
        """What was adjusted, for results.json and the encodings file."""
        # a nominal scale that underflowed to 0 (two tiny scales multiplied) counts as the smallest float32:
        # the factor stays finite, so the report and the encodings file stay valid JSON
        nominal = np.maximum(self.nominal_scale.astype(np.float64), float(np.finfo(np.float32).tiny))
        factor = self.scale.astype(np.float64) / nominal
        return {"bias": bias, "layer": layer, "channels_rescaled": self.n_rescaled,
                "channels": int(self.scale.size if self.scale.size > 1 else self.q.size),
                "max_scale_factor": float(factor.max()), "how": "bias scale enlarged to |b|/2^30 (int32 fits)"}


def int32_bias(b: np.ndarray, nominal_scale: np.ndarray) -> BiasEncoding:
    """``b`` (float32, one value per output channel) as int32 at ``nominal_scale`` where it fits, at a
    larger per-channel scale where it does not (see the module docstring). Never saturates."""
    b = np.asarray(b, np.float32)
    nominal = np.asarray(nominal_scale, np.float32).ravel()
    per_channel = nominal.size > 1
    need = (np.abs(b) if per_channel else np.abs(b).max(initial=0.0, keepdims=True)).astype(np.float32)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        ratio = need.astype(np.float64) / nominal.astype(np.float64)
    rescaled = ~(ratio <= INT32_MAX - 256)  # NaN/inf ratios (a zero scale) count as not fitting
    wide = np.maximum(need / np.float32(_FIT), np.float32(np.finfo(np.float32).tiny)).astype(np.float32)
    scale = np.where(rescaled, wide, nominal).astype(np.float32)
    div = scale if per_channel else scale.reshape(())
    q = np.rint(b / div).astype(np.int64)
    if q.size and (q.min() < INT32_MIN or q.max() > INT32_MAX):  # cannot happen: the rule above guarantees it
        raise AssertionError("int32 bias out of range after rescaling")
    return BiasEncoding(q=q, scale=scale, nominal_scale=nominal, rescaled=rescaled)
