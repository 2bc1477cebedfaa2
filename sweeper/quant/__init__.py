"""Precisions, encodings, calibration statistics and profiles: the plain data of quantization."""

from __future__ import annotations

from sweeper.quant.encoding import Encoding, compute_encoding
from sweeper.quant.precision import Precision
from sweeper.quant.profile import Profile

__all__ = ["Encoding", "Precision", "Profile", "compute_encoding"]
