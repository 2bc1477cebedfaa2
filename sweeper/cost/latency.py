"""Analytic latency estimate (``est_latency_ms``): a per-layer roofline over a target described in YAML.

For each quantizer group (the unit of precision choice) at its precision::

    compute_ms = MACs / throughput(target, precision)
    memory_ms  = (weight bytes + activation bytes) / bandwidth(target)
    ms         = max(compute_ms, memory_ms) + overhead_us_per_layer / 1000

and the model latency is the sum over groups. Groups missing from a profile run at FP32 (as in
:func:`sweeper.cost.bops.profile_cost`).

* MACs: ``group.macs`` (per sample; :meth:`ModelGraph.compute_macs` must have run) x ``batch``.
* Weight bytes: elements of the group's quantized weights x weight bits / 8 (fp16: 2 bytes, fp32: 4).
  Biases are not counted (they are small, int32 at export).
* Activation bytes: per-sample elements of the group's activation tensors (the quantizers the group
  reads, plus model outputs it writes) and of the outputs of the group's ops, each tensor counted once,
  x act bits / 8 x ``batch``. Approximations: every tensor is counted at the group's activation bit
  width (an op output the next group re-quantizes is written at this group's width); an op output whose
  shape was not observed takes the shape of the op's first input with a known shape (exact for the
  elementwise ops that follow a Conv/MatMul), else it is left out; intermediates fused away (Conv+Relu)
  are counted once through the Conv output; data-movement ops (Reshape, MaxPool, ...) cost nothing.
* Throughput key of a precision: ``fp16`` / ``fp32`` for float groups; for ``wXaY`` the integer width
  max(X, Y) rounded up to the nearest width the target lists (``int4``, ``int8``, ``int16``), so int2 uses
  ``int4`` (or ``int8`` when the target has no ``int4``) and w8a16 uses ``int16``.

Targets ship in ``sweeper/cost/targets/*.yaml`` (``npu_generic``, ``cpu_x86``); any YAML file of the
same form can be passed to :func:`load_target`. The estimate is cheap: per-group, per-precision terms
are computed once and cached, and whole-profile results are kept in a bounded LRU cache.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sweeper.errors import SweeperError
from sweeper.model.graph import DATA_MOVEMENT, WEIGHT_OPS, ModelGraph
from sweeper.quant.precision import FP32, Precision
from sweeper.quant.profile import Profile

TARGETS_DIR = Path(__file__).with_name("targets")
INT_KEYS = {"int4": 4, "int8": 8, "int16": 16}
REQUIRED_THROUGHPUT = ("int8", "int16", "fp16", "fp32")
OPTIONAL_THROUGHPUT = ("int4",)
_TOP_LEVEL = ("name", "description", "bandwidth_gbps", "throughput_gmacs", "overhead_us_per_layer")


class TargetError(SweeperError, ValueError):
    """A bad target description: ``<file>: <field>: <problem>`` (a ValueError, and a SweeperError for the CLI)."""


@dataclass(frozen=True)
class Target:
    """A hardware target for the latency estimate."""

    name: str
    bandwidth_gbps: float  # GB/s (1e9 bytes per second)
    throughput_gmacs: Mapping[str, float]  # precision key -> GMAC/s (1e9 MACs per second)
    overhead_us_per_layer: float = 0.0
    description: str = ""
    source: str = field(default="", compare=False)

    def key_for(self, prec: Precision) -> str:
        """Throughput key used for ``prec`` (see the module docstring)."""
        if prec.is_float:
            return "fp32" if prec.is_fp32 else "fp16"
        if prec.weights_float or prec.acts_float:
            return "fp32"
        bits = max(prec.weight_bits, prec.act_bits)
        widths = sorted((w, k) for k, w in INT_KEYS.items() if k in self.throughput_gmacs)
        for width, key in widths:
            if width >= bits:
                return key
        raise ValueError(f"target {self.name!r} has no integer throughput for {bits}-bit operands ({prec.name})")

    def throughput(self, prec: Precision) -> float:
        """GMAC/s at ``prec``."""
        return float(self.throughput_gmacs[self.key_for(prec)])

    @staticmethod
    def from_dict(data: Any, source: str = "<target>") -> Target:
        """Validate a parsed YAML mapping; raises :class:`TargetError` naming ``source`` and the field."""
        if not isinstance(data, Mapping):
            raise TargetError(source, f"a target must be a mapping with keys {', '.join(_TOP_LEVEL)}, "
                                      f"got {type(data).__name__}")
        unknown = sorted(set(map(str, data)) - set(_TOP_LEVEL))
        if unknown:
            raise TargetError(source, f"{unknown[0]}: unknown field (allowed: {', '.join(_TOP_LEVEL)})")
        name = data.get("name", Path(source).stem if source else "target")
        if not isinstance(name, str) or not name.strip():
            raise TargetError(source, f"name: must be a non-empty string, got {name!r}")
        description = data.get("description", "")
        if description is None:
            description = ""
        if not isinstance(description, str):
            raise TargetError(source, f"description: must be a string, got {type(description).__name__}")
        if "bandwidth_gbps" not in data:
            raise TargetError(source, "bandwidth_gbps: missing (memory bandwidth in GB/s)")
        bandwidth = _positive(data["bandwidth_gbps"], source, "bandwidth_gbps")
        overhead = data.get("overhead_us_per_layer", 0.0)
        if overhead is None:
            overhead = 0.0
        overhead = _number(overhead, source, "overhead_us_per_layer", allow_zero=True)
        if "throughput_gmacs" not in data:
            raise TargetError(source, "throughput_gmacs: missing (GMAC/s per precision: "
                                      f"{', '.join(REQUIRED_THROUGHPUT)}, optional {', '.join(OPTIONAL_THROUGHPUT)})")
        tp = data["throughput_gmacs"]
        if not isinstance(tp, Mapping):
            raise TargetError(source, f"throughput_gmacs: must be a mapping of precision to GMAC/s, "
                                      f"got {type(tp).__name__}")
        allowed = REQUIRED_THROUGHPUT + OPTIONAL_THROUGHPUT
        for key in tp:
            if str(key) not in allowed:
                raise TargetError(source, f"throughput_gmacs.{key}: unknown precision key "
                                          f"(allowed: {', '.join(allowed)})")
        for key in REQUIRED_THROUGHPUT:
            if key not in tp:
                raise TargetError(source, f"throughput_gmacs.{key}: missing (GMAC/s at {key})")
        throughput = {str(k): _positive(v, source, f"throughput_gmacs.{k}") for k, v in tp.items()}
        return Target(name=name.strip(), bandwidth_gbps=bandwidth, throughput_gmacs=throughput,
                      overhead_us_per_layer=overhead, description=description.strip(), source=source)

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "description": self.description, "bandwidth_gbps": self.bandwidth_gbps,
                "throughput_gmacs": dict(self.throughput_gmacs),
                "overhead_us_per_layer": self.overhead_us_per_layer}


def _number(value: Any, source: str, fld: str, allow_zero: bool = False) -> float:
    what = "a non-negative number" if allow_zero else "a positive number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TargetError(source, f"{fld}: must be {what}, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise TargetError(source, f"{fld}: must be {what}, got {value!r}")
    return v


def _positive(value: Any, source: str, fld: str) -> float:
    return _number(value, source, fld, allow_zero=False)


def list_targets() -> list[str]:
    """Names of the bundled targets."""
    return sorted(p.stem for p in TARGETS_DIR.glob("*.yaml"))


def load_target(name_or_path: str | Path) -> Target:
    """A bundled target by name (``npu_generic``, ``cpu_x86``) or a YAML file; :class:`TargetError` if bad."""
    text = str(name_or_path)
    bundled = TARGETS_DIR / f"{text}.yaml"
    if not isinstance(name_or_path, Path) and "/" not in text and "\\" not in text and bundled.is_file():
        path = bundled
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise TargetError(text, f"no such target: not a bundled target ({', '.join(list_targets())}) "
                                    "and not a readable YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise TargetError(str(path), f"cannot read target file ({type(exc).__name__}: {exc})") from None
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TargetError(str(path), f"not valid YAML ({first})") from None
    return Target.from_dict(data, str(path))


@dataclass(frozen=True)
class _GroupBase:
    name: str
    macs: int  # per batch
    weight_elems: int
    act_elems: int  # per batch


class CostModel:
    """Estimated latency of a profile on a :class:`Target`: per-group roofline, summed.

    ``graph`` must have had :meth:`ModelGraph.compute_macs` run (``group.macs``); ``shapes`` are observed
    tensor shapes with the batch axis first (``CalibrationStats.shapes``: activations plus the inputs and
    outputs of weight ops). ``batch`` multiplies MACs and activation bytes (weights are read once).
    """

    PROFILE_CACHE = 4096

    def __init__(self, graph: ModelGraph, shapes: Mapping[str, tuple[int, ...]], target: Target,
                 batch: int = 1) -> None:
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        has_weight_ops = any(n.op_type in WEIGHT_OPS for n in graph.nodes)
        if has_weight_ops and not any(g.macs for g in graph.groups):
            raise ValueError("every group has 0 MACs: run graph.compute_macs(stats.shapes) before the CostModel")
        self.graph = graph
        self.target = target
        self.batch = batch
        self.missing_shapes: list[str] = []  # tensors left out of the activation bytes (no shape known)
        self._groups = [self._base(g.name, g.macs, g.weights, g.activations, g.ops, shapes) for g in graph.groups]
        self._group_names = [b.name for b in self._groups]
        self._terms: dict[tuple[int, Precision], tuple[float, float, float]] = {}
        self._profiles: OrderedDict[Profile, float] = OrderedDict()

    # -- setup ------------------------------------------------------------------------------------
    def _base(self, name: str, macs: int, weights: list[str], acts: list[str], ops: list[str],
              shapes: Mapping[str, tuple[int, ...]]) -> _GroupBase:
        tensors: list[str] = list(acts)
        for op in ops:
            node = self.graph.node_by_name[op]
            if node.op_type in DATA_MOVEMENT:
                continue
            tensors.extend(o for o in node.output if o)
        elems = 0
        for t in dict.fromkeys(tensors):
            n = self._per_sample(t, shapes)
            if n is None:
                self.missing_shapes.append(t)
                continue
            elems += n
        return _GroupBase(name=name, macs=int(macs) * self.batch, weight_elems=self.graph.weight_count(weights),
                          act_elems=elems * self.batch)

    def _per_sample(self, t: str, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
        shape = shapes.get(t)
        if shape is None:
            node = self.graph.producer.get(t)
            if node is None:
                return None
            for i in node.input:
                if i and i in shapes and i not in self.graph.initializers:
                    shape = shapes[i]
                    break
            if shape is None:
                return None
        return int(np.prod(shape[1:])) if len(shape) > 1 else int(np.prod(shape))

    # -- estimates --------------------------------------------------------------------------------
    def _group_terms(self, i: int, prec: Precision) -> tuple[float, float, float]:
        """(compute_ms, memory_ms, ms) of group ``i`` at ``prec``, cached."""
        key = (i, prec)
        hit = self._terms.get(key)
        if hit is not None:
            return hit
        b = self._groups[i]
        tgt = self.target
        compute_ms = b.macs / (tgt.throughput(prec) * 1e9) * 1e3
        nbytes = b.weight_elems * prec.weight_bits / 8 + b.act_elems * prec.act_bits / 8
        memory_ms = nbytes / (tgt.bandwidth_gbps * 1e9) * 1e3
        out = (compute_ms, memory_ms, max(compute_ms, memory_ms) + tgt.overhead_us_per_layer / 1e3)
        self._terms[key] = out
        return out

    def latency_ms(self, profile: Profile) -> float:
        """Estimated latency (ms) of one forward pass of ``batch`` samples at ``profile``."""
        cached = self._profiles.get(profile)
        if cached is not None:
            self._profiles.move_to_end(profile)
            return cached
        assign = dict(profile.assignment)
        total = 0.0
        for i, name in enumerate(self._group_names):
            total += self._group_terms(i, assign.get(name, FP32))[2]
        self._profiles[profile] = total
        if len(self._profiles) > self.PROFILE_CACHE:
            self._profiles.popitem(last=False)
        return total

    def per_layer(self, profile: Profile) -> list[dict[str, object]]:
        """One row per group: precision, MACs, bytes, compute/memory time, the bound, and ms."""
        assign = dict(profile.assignment)
        rows: list[dict[str, object]] = []
        for i, b in enumerate(self._groups):
            prec = assign.get(b.name, FP32)
            compute_ms, memory_ms, ms = self._group_terms(i, prec)
            rows.append({
                "group": b.name,
                "precision": prec.name,
                "throughput_key": self.target.key_for(prec),
                "macs": b.macs,
                "weight_bytes": b.weight_elems * prec.weight_bits / 8,
                "activation_bytes": b.act_elems * prec.act_bits / 8,
                "compute_ms": compute_ms,
                "memory_ms": memory_ms,
                "bound": "compute" if compute_ms >= memory_ms else "memory",
                "ms": ms,
            })
        return rows
