"""The accuracy target: the one definition of "drop" and "meets the target" every step and report uses."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """``fp32`` is the FP32 model's metric; a profile meets the target when it is at most ``max_drop``
    worse (lower when higher is better, higher otherwise)."""

    fp32: float
    max_drop: float
    higher_is_better: bool = True

    def drop(self, metric: float) -> float:
        """How much worse than FP32 (positive = worse), in metric units."""
        return (self.fp32 - metric) if self.higher_is_better else (metric - self.fp32)

    def meets(self, metric: float) -> bool:
        return self.drop(metric) <= self.max_drop

    @property
    def threshold(self) -> float:
        """The worst metric that still meets the target."""
        return self.fp32 - self.max_drop if self.higher_is_better else self.fp32 + self.max_drop

    def to_json(self) -> dict[str, float | bool]:
        return {"fp32_metric": self.fp32, "max_drop": self.max_drop, "higher_is_better": self.higher_is_better,
                "threshold": self.threshold}
