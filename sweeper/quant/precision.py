"""Precision: weight and activation format of one quantizer group (``w8a16``, ``w4a8``, ``fp16``, ``fp32``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_ALLOWED_BITS = (2, 4, 8, 16)
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
            if w in _ALLOWED_BITS and a in _ALLOWED_BITS:
                return Precision(w, a, False)
        raise ValueError(
            f"unknown precision {name!r}: expected wXaY with X and Y in {{2, 4, 8, 16}} (e.g. w8a16), fp16 or fp32"
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
    def bops_factor(self) -> int:
        """Bits of weight x bits of activation per MAC (float16 counts as 16 x 16, as AIMET counts it)."""
        return self.weight_bits * self.act_bits

    def __str__(self) -> str:
        return self.name


FP32 = Precision(32, 32, True)
FP16 = Precision(16, 16, True)
