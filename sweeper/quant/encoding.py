"""Encodings (scale/offset per tensor or per channel) and how they are computed from statistics.

Conventions follow AIMET's encodings: an integer encoding has an unsigned grid ``q in [0, 2**bw - 1]``
and ``x = (q + offset) * scale``; a symmetric encoding has ``offset = -2**(bw-1)``. Export maps the grid to an
ONNX container: signed (``zero_point = -offset - 2**(bw-1)``) for symmetric, unsigned (``zero_point = -offset``)
for asymmetric encodings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCHEMES = ("minmax", "percentile", "mse")


@dataclass
class Encoding:
    """The encoding of one tensor at one bit width (``dtype='float'`` for float16, which has no scale)."""

    bitwidth: int
    dtype: str = "int"  # "int" or "float"
    symmetric: bool = False
    scale: np.ndarray = field(default_factory=lambda: np.ones(1, np.float32))
    offset: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    axis: int | None = None  # per-channel axis, None for per-tensor

    @property
    def signed(self) -> bool:
        return self.symmetric

    @property
    def zero_point(self) -> np.ndarray:
        """Zero point in the ONNX container (signed for symmetric encodings)."""
        zp = -self.offset.astype(np.int64)
        if self.signed:
            zp = zp - (1 << (self.bitwidth - 1))
        return zp

    @property
    def qmin(self) -> int:
        return -(1 << (self.bitwidth - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return (1 << (self.bitwidth - 1)) - 1 if self.signed else (1 << self.bitwidth) - 1

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Float values of the lowest and highest grid points, computed as DequantizeLinear does."""
        zp = self.zero_point.astype(np.int64)
        with np.errstate(over="ignore"):
            return self._bounds(zp)

    def _bounds(self, zp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo = (self.qmin - zp).astype(np.float32) * self.scale.astype(np.float32)
        hi = (self.qmax - zp).astype(np.float32) * self.scale.astype(np.float32)
        return lo, hi

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Integers of ``x`` in the container (round half to even, saturate), as QuantizeLinear computes them."""
        scale, zp = self._broadcast(x)
        with np.errstate(over="ignore", invalid="ignore"):
            q = np.rint(x.astype(np.float32) / scale) + zp
        return np.clip(q, self.qmin, self.qmax).astype(np.int64)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        scale, zp = self._broadcast(q)
        return (q.astype(np.int64) - zp.astype(np.int64)).astype(np.float32) * scale

    def fake_quantize(self, x: np.ndarray) -> np.ndarray:
        """DequantizeLinear(QuantizeLinear(x)), or the float16 round trip for float encodings."""
        if self.dtype == "float":
            return x.astype(np.float16).astype(np.float32)
        return self.dequantize(self.quantize(x))

    def _broadcast(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scale = self.scale.astype(np.float32)
        zp = self.zero_point.astype(np.float32)
        if self.axis is not None and x.ndim > 0:
            shape = [1] * x.ndim
            shape[self.axis] = -1
            return scale.reshape(shape), zp.reshape(shape)
        return scale.reshape(()), zp.reshape(())

    def to_aimet(self, name: str) -> dict[str, Any]:
        """One entry of an AIMET 1.0.0 encodings file."""
        if self.dtype == "float":
            return {"name": name, "dtype": "FLOAT", "enc_type": "PER_TENSOR", "bw": self.bitwidth}
        return {
            "name": name,
            "dtype": "INT",
            "enc_type": "PER_CHANNEL" if self.axis is not None else "PER_TENSOR",
            "bw": int(self.bitwidth),
            "is_sym": bool(self.symmetric),
            "scale": [float(s) for s in np.asarray(self.scale, np.float32).ravel()],
            "offset": [int(o) for o in np.asarray(self.offset).ravel()],
        }

    @staticmethod
    def from_aimet(entry: dict[str, Any], axis: int | None = None) -> Encoding:
        if str(entry.get("dtype", "INT")).upper() == "FLOAT":
            return Encoding(bitwidth=int(entry.get("bw", 16)), dtype="float")
        per_channel = str(entry.get("enc_type", "PER_TENSOR")).upper() == "PER_CHANNEL"
        return Encoding(
            bitwidth=int(entry["bw"]),
            dtype="int",
            symmetric=bool(entry.get("is_sym", False)),
            scale=np.asarray(entry["scale"], np.float32),
            offset=np.asarray(entry["offset"], np.float64).round().astype(np.int64),
            axis=axis if per_channel else None,
        )


def float16_encoding() -> Encoding:
    return Encoding(bitwidth=16, dtype="float")


def _round_half_away(x: np.ndarray) -> np.ndarray:
    """Round half away from zero (C's ``round``, which AIMET uses for offsets), not numpy's half to even."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


MIN_SCALE = float(np.finfo(np.float32).tiny)  # the smallest normal float32: no scale is 0 or subnormal
EMPTY_RANGE_SCALE = 1e-8  # the scale of a range with nothing in it (all zeros)


def _positive_scale(scale64: np.ndarray) -> np.ndarray:
    """Every scale a positive normal float32: an empty range gets ``EMPTY_RANGE_SCALE``, a range so small that
    its scale would round to 0 or a subnormal in float32 (a layer of subnormal activations) gets ``MIN_SCALE``
    (its values quantize to 0, as they are 0 to any precision that matters)."""
    return np.where(scale64 > 0, np.maximum(scale64, MIN_SCALE), EMPTY_RANGE_SCALE)


def symmetric_scale(lo: np.ndarray, hi: np.ndarray, bitwidth: int) -> np.ndarray:
    """Scale of AIMET's signed symmetric grid ``[-2**(bw-1), 2**(bw-1) - 1] * scale`` covering ``[lo, hi]``.

    The smallest scale that reaches both ends: ``max(-lo / 2**(bw-1), hi / (2**(bw-1) - 1))``, so a range whose
    positive end is the larger one is not clipped by the grid's one-step-short positive side. At 2 bits
    (one positive step) AIMET counts the positive side as two steps, trading clipping of the positive end
    for using all four levels: the scale is ``absmax / 2``. This is aimet-onnx 2.42's ``getComputedEncodings``
    (measured: per-channel weight scales equal at 2, 4, 8 and 16 bits).
    """
    neg_steps = 1 << (bitwidth - 1)
    pos_steps = neg_steps - 1 if bitwidth > 2 else neg_steps
    return np.maximum(np.maximum(hi, 0.0) / pos_steps, -np.minimum(lo, 0.0) / neg_steps)


def encoding_from_range(
    lo: np.ndarray, hi: np.ndarray, bitwidth: int, symmetric: bool, axis: int | None = None
) -> Encoding:
    """Encoding covering ``[lo, hi]`` (per element of ``lo``/``hi``) the way AIMET computes it from a range.

    The range always contains zero. Symmetric: :func:`symmetric_scale`, offset ``-2**(bw-1)``. Asymmetric:
    ``scale = (hi - lo) / (2**bw - 1)`` and ``offset = round(lo / scale)`` (half away from zero, in float64,
    clamped to the grid), so zero is exactly representable.
    """
    lo = np.minimum(np.asarray(lo, np.float64), 0.0)
    hi = np.maximum(np.asarray(hi, np.float64), 0.0)
    levels = (1 << bitwidth) - 1
    if symmetric:
        scale64 = _positive_scale(symmetric_scale(lo, hi, bitwidth))
        scale = scale64.astype(np.float32)
        offset = np.full(scale.shape, -(1 << (bitwidth - 1)), np.int64)
    else:
        scale64 = _positive_scale((hi - lo) / levels)
        scale = scale64.astype(np.float32)
        offset = np.clip(_round_half_away(lo / scale64), -levels, 0).astype(np.int64)
    return Encoding(
        bitwidth=bitwidth,
        dtype="int",
        symmetric=symmetric,
        scale=np.atleast_1d(scale),
        offset=np.atleast_1d(offset),
        axis=axis,
    )


def compute_weight_encoding(
    w: np.ndarray, bitwidth: int, symmetric: bool = True, axis: int | None = 0
) -> Encoding:
    """Min-max encoding of a weight tensor, per channel along ``axis`` (None: per tensor)."""
    w = np.asarray(w, np.float32)
    if axis is None or w.ndim == 0:
        return encoding_from_range(np.array([w.min()]), np.array([w.max()]), bitwidth, symmetric, None)
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    return encoding_from_range(moved.min(axis=1), moved.max(axis=1), bitwidth, symmetric, axis)


def _grid_error(centers: np.ndarray, counts: np.ndarray, lo: float, hi: float, bits: int, sym: bool) -> float:
    enc = encoding_from_range(np.array([lo]), np.array([hi]), bits, sym)
    err = enc.fake_quantize(centers.astype(np.float32)) - centers
    return float(np.sum(counts * err.astype(np.float64) ** 2))


def compute_encoding(
    stats: Any, bitwidth: int, symmetric: bool = False, scheme: str = "minmax", percentile: float = 99.99
) -> Encoding:
    """Per-tensor activation encoding from :class:`~sweeper.quant.calibration.TensorStats`.

    ``minmax`` covers the observed range; ``percentile`` clips to the given percentile at both ends;
    ``mse`` picks the range that minimizes the expected squared quantization error over the histogram
    (the role AIMET's TF-enhanced scheme plays).
    """
    lo, hi = float(stats.min), float(stats.max)
    if scheme == "minmax" or stats.hist is None or hi <= lo:
        return encoding_from_range(np.array([lo]), np.array([hi]), bitwidth, symmetric)
    counts = stats.hist.astype(np.float64)
    edges = stats.edges
    centers = 0.5 * (edges[:-1] + edges[1:])
    if scheme == "percentile":
        cdf = np.cumsum(counts) / max(counts.sum(), 1.0)
        tail = (100.0 - percentile) / 100.0
        p_lo = float(edges[np.searchsorted(cdf, tail, side="left")]) if lo < 0 else lo
        p_hi = float(edges[min(np.searchsorted(cdf, 1.0 - tail, side="left") + 1, len(edges) - 1)])
        return encoding_from_range(np.array([max(p_lo, lo)]), np.array([min(p_hi, hi)]), bitwidth, symmetric)
    if scheme == "mse":
        nz = counts > 0
        centers, counts = centers[nz], counts[nz]
        ts = np.linspace(0.2, 1.0, 33)
        best = (np.inf, lo, hi)
        if symmetric or lo >= 0 or hi <= 0:
            candidates = [(lo * t, hi * t) for t in ts]
        else:
            candidates = [(lo * a, hi * b) for a in ts[::2] for b in ts[::2]]
        for c_lo, c_hi in candidates:
            err = _grid_error(centers, counts, c_lo, c_hi, bitwidth, symmetric)
            if err < best[0]:
                best = (err, c_lo, c_hi)
        return encoding_from_range(np.array([best[1]]), np.array([best[2]]), bitwidth, symmetric)
    raise ValueError(f"unknown calibration scheme {scheme!r}: expected one of {', '.join(SCHEMES)}")
