"""Profile: one precision per quantizer group, the value object every strategy, worker and run shares."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sweeper.quant.precision import Precision


@dataclass(frozen=True)
class Profile:
    """An assignment of a :class:`Precision` to each quantizer group (by group name), hashable."""

    assignment: tuple[tuple[str, Precision], ...]

    @staticmethod
    def make(assignment: Mapping[str, Precision | str]) -> Profile:
        items = []
        for name, prec in assignment.items():
            items.append((name, prec if isinstance(prec, Precision) else Precision.parse(prec)))
        return Profile(tuple(sorted(items)))

    @staticmethod
    def uniform(groups: Iterable[str], precision: Precision | str) -> Profile:
        prec = precision if isinstance(precision, Precision) else Precision.parse(precision)
        return Profile.make({g: prec for g in groups})

    def as_dict(self) -> dict[str, Precision]:
        return dict(self.assignment)

    def __getitem__(self, group: str) -> Precision:
        for name, prec in self.assignment:
            if name == group:
                return prec
        raise KeyError(group)

    def with_groups(self, changes: Mapping[str, Precision]) -> Profile:
        merged = self.as_dict()
        merged.update(changes)
        return Profile.make(merged)

    def to_json(self) -> dict[str, str]:
        return {name: prec.name for name, prec in self.assignment}

    @staticmethod
    def from_json(data: Mapping[str, str]) -> Profile:
        return Profile.make({k: Precision.parse(v) for k, v in data.items()})

    @property
    def key(self) -> str:
        """Stable short hash (used to key MLflow runs and study trials)."""
        text = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def counts(self) -> dict[str, int]:
        return dict(Counter(prec.name for _, prec in self.assignment))

    @property
    def uniform_precision(self) -> Precision | None:
        """The one precision every group has, or None for a mixed profile (a uniform candidate is recognised
        by what it assigns, whatever name the search that evaluated it gave it)."""
        precs = {prec.name: prec for _, prec in self.assignment}
        return next(iter(precs.values())) if len(precs) == 1 else None

    def label(self) -> str:
        """``w8a8`` when uniform, else ``mixed(w8a8:5,fp16:2)``."""
        counts = self.counts()
        if len(counts) == 1:
            return next(iter(counts))
        return "mixed(" + ",".join(f"{k}:{v}" for k, v in sorted(counts.items())) + ")"
