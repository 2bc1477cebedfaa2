"""Precision: weight and activation format of one quantizer group (``w8a16``, ``w4a8``, ``fp16``, ``fp32``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_ALLOWED_BITS = (2, 4, 8, 16)
FLOAT_BITS = 32  # in wXaY, 32 means "not quantized" (w8a32: weights only; w32a8: activations only)
_PATTERN = re.compile(r"^w(\d+)a(\d+)$")


@dataclass(frozen=True, order=True)
class Precision:
    """Integer bit widths of weights and activations, or a float format (``fp16``/``fp32``) for both."""

    weight_bits: int
    act_bits: int
    is_float: bool = False

    @staticmethod
    def parse(name: str) -> Precision:
        """Parse ``wXaY`` (X, Y in 2, 4, 8, 16), ``fp16`` or ``fp32``; raises ValueError with the allowed forms."""
        text = str(name).strip().lower()
        if text == "fp16":
            return Precision(16, 16, True)
        if text == "fp32":
            return Precision(32, 32, True)
        match = _PATTERN.match(text)
        if match:
            w, a = int(match.group(1)), int(match.group(2))
            allowed = (*_ALLOWED_BITS, FLOAT_BITS)
            if w in allowed and a in allowed:
                return Precision(32, 32, True) if w == a == FLOAT_BITS else Precision(w, a, False)
        raise ValueError(
            f"unknown precision {name!r}: expected wXaY with X and Y in {{2, 4, 8, 16}} (e.g. w8a16; 32 leaves "
            "that side float: w8a32), fp16 or fp32"
        )

    @property
    def name(self) -> str:
        if self.is_float:
            return f"fp{self.weight_bits}"
        return f"w{self.weight_bits}a{self.act_bits}"

    @property
    def is_fp32(self) -> bool:
        return self.is_float and self.weight_bits == 32

    @property
    def is_fp16(self) -> bool:
        return self.is_float and self.weight_bits == 16

    @property
    def weights_float(self) -> bool:
        return self.is_fp32 or (not self.is_float and self.weight_bits == FLOAT_BITS)

    @property
    def acts_float(self) -> bool:
        return self.is_fp32 or (not self.is_float and self.act_bits == FLOAT_BITS)

    def weights_only(self) -> Precision:
        """Only the weights at this precision (activations float32), for analysis."""
        return FP32 if self.is_fp32 or self.weights_float else (
            FP16 if self.is_fp16 else Precision(self.weight_bits, FLOAT_BITS))

    def activations_only(self) -> Precision:
        """Only the activations at this precision (weights float32), for analysis."""
        return FP32 if self.is_fp32 or self.acts_float else (
            FP16 if self.is_fp16 else Precision(FLOAT_BITS, self.act_bits))

    @property
    def bops_factor(self) -> int:
        """Bits of weight x bits of activation per MAC (float16 counts as 16 x 16, as AIMET counts it)."""
        return self.weight_bits * self.act_bits

    def __str__(self) -> str:
        return self.name


FP32 = Precision(32, 32, True)
FP16 = Precision(16, 16, True)


DEFAULT_CANDIDATES = ("w8a8", "w8a16", "w16a16", "fp16", "w4a8", "w4a16")  # Step 1's default candidates
