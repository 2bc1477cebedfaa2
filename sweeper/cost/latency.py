"""Latency estimate (``est_latency_ms``, **milliseconds per sample**) of a profile on a target described in YAML.

The unit is one sample of a forward pass run in batches of ``batch`` samples (the batch the shapes were
observed at, i.e. the experiment's evaluation batch): per-run costs (reading or dequantizing weights, kernel
dispatch) are divided by ``batch``. Measured latency (:mod:`sweeper.cost.measure`) is reported per sample too.
Groups missing from a profile run at FP32 (as in :func:`sweeper.cost.bops.profile_cost`). Two target kinds:

**roofline** (``npu_generic``; a target with ``bandwidth_gbps`` and ``throughput_gmacs``), per group::

    compute_ms = MACs / throughput(target, precision)
    memory_ms  = (weight bytes / batch + activation bytes) / bandwidth(target)
    ms         = max(compute_ms, memory_ms) + overhead_us_per_layer / 1000 / batch

* Throughput key of a precision: ``fp16`` / ``fp32`` for float groups; for ``wXaY`` the integer width
  max(X, Y) rounded up to the nearest width the target lists (``int4``, ``int8``, ``int16``).

**qdq_runtime** (``cpu_x86``; a target with a ``qdq_runtime`` section): a runtime that executes the exported
QDQ model as written and only has fast integer kernels for 8-bit weights and activations (ONNX Runtime's
CPU EP: QLinearConv, QGemm, MatMulInteger fusions). Every group runs in one *mode*:

* ``fp32`` (no quantizer) and ``fp16`` (Cast round trips around float32 kernels);
* ``int8``: w8a8 on a group with MACs whose outputs are read by 8-bit integer quantizers (or, for
  MatMul/Gemm, by none: they can produce float) -- the QDQ pattern fuses into an integer kernel;
* ``qdq``: anything else quantized: a float kernel on dequantized inputs, the weights dequantized at
  every run (the runtime cannot fold a DequantizeLinear into a prepacked weight), the activations quantized
  and dequantized (4/2-bit activations also clipped), each at a cost per element.

  ms = MACs x ns_per_{conv,matmul}_mac[mode] + activation elements x ns_per_activation[class]
       + MaxPool input elements x ns_per_pool_element[class]
       + weight elements x ns_per_weight_dequant[weight bits] / batch  (qdq mode only)
       + overhead_us_per_layer / 1000 / batch

The coefficients are fitted from measurements (``bench/latency_fit.py``). A group's mode depends on the
precision of the groups that read its outputs, so the estimate is not a sum of independent per-group terms.

Shared definitions. MACs: ``group.macs`` (per sample; :meth:`ModelGraph.compute_macs` must have run).
Weight bytes: quantized weight elements x weight bits / 8 (fp16: 2 bytes, fp32: 4); biases are not counted.
Activation elements: per-sample elements of the group's activation quantizers (the tensors it reads, plus
model outputs it writes) and of the outputs of its ops, each tensor counted once; an op output whose shape was
not observed takes the shape of the op's first input with a known shape, else it is left out; data-movement
ops (Reshape, MaxPool, ...) add nothing. Roofline activation bytes count them at the group's activation width.

Targets ship in ``sweeper/cost/targets/*.yaml``; any YAML file of the same form can be passed to
:func:`load_target`. The estimate is cheap: per-group terms are cached, and whole-profile results are kept in
a bounded LRU cache.
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
_TOP_LEVEL = ("name", "description", "bandwidth_gbps", "throughput_gmacs", "overhead_us_per_layer", "qdq_runtime")
# qdq_runtime: section -> its required keys
QDQ_FIELDS = {
    "ns_per_conv_mac": ("fp32", "fp16", "int8", "qdq"),  # groups with a Conv/ConvTranspose
    "ns_per_matmul_mac": ("fp32", "fp16", "int8", "qdq"),  # groups with MatMul/Gemm (and no Conv)
    "ns_per_activation": ("fp32", "fp16", "int8", "a4", "a8", "a16"),
    "ns_per_pool_element": ("fp32", "fp16", "int8", "a4", "a8", "a16"),  # MaxPool input, by its quantizer
    "ns_per_weight_dequant": ("int4", "int8", "int16"),
}


class TargetError(SweeperError, ValueError):
    """A bad target description: ``<file>: <field>: <problem>`` (a ValueError, and a SweeperError for the CLI)."""


@dataclass(frozen=True)
class QdqRuntime:
    """Per-unit costs (nanoseconds) of a runtime executing exported QDQ models (see the module docstring)."""

    ns_per_conv_mac: Mapping[str, float]  # mode (fp32, fp16, int8, qdq) -> ns per MAC, Conv groups
    ns_per_matmul_mac: Mapping[str, float]  # the same for MatMul/Gemm groups
    ns_per_activation: Mapping[str, float]  # class (fp32, fp16, int8, a4, a8, a16) -> ns per element per sample
    ns_per_pool_element: Mapping[str, float]  # the same for MaxPool inputs, by the class of the quantizer read
    ns_per_weight_dequant: Mapping[str, float]  # int4/int8/int16 -> ns per weight element per run

    def to_json(self) -> dict[str, dict[str, float]]:
        return {k: dict(getattr(self, k)) for k in QDQ_FIELDS}


@dataclass(frozen=True)
class Target:
    """A hardware target for the latency estimate: a roofline, or a QDQ runtime (``qdq``)."""

    name: str
    bandwidth_gbps: float | None = None  # GB/s (1e9 bytes per second); roofline
    throughput_gmacs: Mapping[str, float] | None = None  # precision key -> GMAC/s; roofline
    overhead_us_per_layer: float = 0.0  # per group and run (divided by the batch per sample)
    description: str = ""
    source: str = field(default="", compare=False)
    qdq: QdqRuntime | None = None

    @property
    def kind(self) -> str:
        return "qdq_runtime" if self.qdq is not None else "roofline"

    def key_for(self, prec: Precision) -> str:
        """Roofline throughput key used for ``prec`` (see the module docstring)."""
        if prec.is_float:
            return "fp32" if prec.is_fp32 else "fp16"
        if prec.weights_float or prec.acts_float:
            return "fp32"
        bits = max(prec.weight_bits, prec.act_bits)
        widths = sorted((w, k) for k, w in INT_KEYS.items() if k in (self.throughput_gmacs or {}))
        for width, key in widths:
            if width >= bits:
                return key
        raise ValueError(f"target {self.name!r} has no integer throughput for {bits}-bit operands ({prec.name})")

    def throughput(self, prec: Precision) -> float:
        """GMAC/s at ``prec`` (roofline targets)."""
        return float((self.throughput_gmacs or {})[self.key_for(prec)])

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
        overhead = data.get("overhead_us_per_layer", 0.0)
        overhead = _number(0.0 if overhead is None else overhead, source, "overhead_us_per_layer", allow_zero=True)
        qdq = _qdq_runtime(data["qdq_runtime"], source) if "qdq_runtime" in data else None
        bandwidth = throughput = None
        if qdq is None or "bandwidth_gbps" in data:
            if "bandwidth_gbps" not in data:
                raise TargetError(source, "bandwidth_gbps: missing (memory bandwidth in GB/s)")
            bandwidth = _positive(data["bandwidth_gbps"], source, "bandwidth_gbps")
        if qdq is None or "throughput_gmacs" in data:
            throughput = _throughput(data, source)
        return Target(name=name.strip(), bandwidth_gbps=bandwidth, throughput_gmacs=throughput,
                      overhead_us_per_layer=overhead, description=description.strip(), source=source, qdq=qdq)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name, "kind": self.kind, "description": self.description,
                                  "overhead_us_per_layer": self.overhead_us_per_layer}
        if self.bandwidth_gbps is not None:
            out["bandwidth_gbps"] = self.bandwidth_gbps
        if self.throughput_gmacs is not None:
            out["throughput_gmacs"] = dict(self.throughput_gmacs)
        if self.qdq is not None:
            out["qdq_runtime"] = self.qdq.to_json()
        return out


def _throughput(data: Mapping[str, Any], source: str) -> dict[str, float]:
    if "throughput_gmacs" not in data:
        raise TargetError(source, "throughput_gmacs: missing (GMAC/s per precision: "
                                  f"{', '.join(REQUIRED_THROUGHPUT)}, optional {', '.join(OPTIONAL_THROUGHPUT)})")
    tp = data["throughput_gmacs"]
    if not isinstance(tp, Mapping):
        raise TargetError(source, f"throughput_gmacs: must be a mapping of precision to GMAC/s, got {type(tp).__name__}")
    allowed = REQUIRED_THROUGHPUT + OPTIONAL_THROUGHPUT
    for key in tp:
        if str(key) not in allowed:
            raise TargetError(source, f"throughput_gmacs.{key}: unknown precision key (allowed: {', '.join(allowed)})")
    for key in REQUIRED_THROUGHPUT:
        if key not in tp:
            raise TargetError(source, f"throughput_gmacs.{key}: missing (GMAC/s at {key})")
    return {str(k): _positive(v, source, f"throughput_gmacs.{k}") for k, v in tp.items()}


def _qdq_runtime(section: Any, source: str) -> QdqRuntime:
    """The ``qdq_runtime`` section: three mappings of non-negative nanosecond costs, every key required."""
    if not isinstance(section, Mapping):
        raise TargetError(source, f"qdq_runtime: must be a mapping with keys {', '.join(QDQ_FIELDS)}, "
                                  f"got {type(section).__name__}")
    unknown = sorted(set(map(str, section)) - set(QDQ_FIELDS))
    if unknown:
        raise TargetError(source, f"qdq_runtime.{unknown[0]}: unknown field (allowed: {', '.join(QDQ_FIELDS)})")
    parsed: dict[str, dict[str, float]] = {}
    for fld, keys in QDQ_FIELDS.items():
        where = f"qdq_runtime.{fld}"
        sub = section.get(fld)
        if not isinstance(sub, Mapping):
            raise TargetError(source, f"{where}: missing or not a mapping (nanoseconds per unit for "
                                      f"{', '.join(keys)})")
        extra = sorted(set(map(str, sub)) - set(keys))
        if extra:
            raise TargetError(source, f"{where}.{extra[0]}: unknown key (allowed: {', '.join(keys)})")
        for k in keys:
            if k not in sub:
                raise TargetError(source, f"{where}.{k}: missing (nanoseconds)")
        parsed[fld] = {k: _number(sub[k], source, f"{where}.{k}", allow_zero=True) for k in keys}
    return QdqRuntime(**parsed)


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
    macs: int  # per sample
    weight_elems: int
    act_elems: int  # per sample
    pool_elems: int  # per sample: inputs of the MaxPools that read this group's activation quantizers
    has_conv: bool  # a Conv/ConvTranspose among its ops (cannot hand a float output to a fused kernel)


def observed_batch(shapes: Mapping[str, tuple[int, ...]]) -> int:
    """The batch the shapes were observed at: the most common leading axis of the tensors with 2+ axes."""
    firsts = [int(s[0]) for s in shapes.values() if len(s) > 1]
    return max(set(firsts), key=firsts.count) if firsts else 1


def qdq_mode(prec: Precision, macs: int, fusable: bool) -> str:
    """Kernel mode of a group on a QDQ runtime: ``fp32``, ``fp16``, ``int8`` (fused) or ``qdq``."""
    if prec.is_fp32:
        return "fp32"
    if prec.is_fp16:
        return "fp16"
    if prec.weight_bits == 8 and prec.act_bits == 8 and macs > 0 and fusable:
        return "int8"
    return "qdq"


def activation_class(prec: Precision, mode: str) -> str:
    """Per-element activation cost class: the mode, or for ``qdq`` the integer container (a4: clipped)."""
    if mode != "qdq":
        return mode
    if prec.acts_float:
        return "fp32"
    return "a4" if prec.act_bits <= 4 else ("a8" if prec.act_bits <= 8 else "a16")


def weight_class(prec: Precision) -> str | None:
    """Weight container dequantized at run time (qdq mode): int4 (4/2-bit), int8 or int16; None if float."""
    if prec.is_float or prec.weights_float:
        return None
    return "int4" if prec.weight_bits <= 4 else ("int8" if prec.weight_bits <= 8 else "int16")


class CostModel:
    """Estimated latency per sample of a profile on a :class:`Target` (see the module docstring).

    ``graph`` must have had :meth:`ModelGraph.compute_macs` run (``group.macs``); ``shapes`` are observed
    tensor shapes with the batch axis first (``CalibrationStats.shapes``: activations plus the inputs and
    outputs of weight ops). ``batch``: samples per run, over which per-run costs are spread; by default the
    batch the shapes were observed at (:func:`observed_batch`; the pipeline's calibration batch, which is the
    evaluation batch the measured latency runs at unless the calibration set is smaller).
    """

    PROFILE_CACHE = 4096

    def __init__(self, graph: ModelGraph, shapes: Mapping[str, tuple[int, ...]], target: Target,
                 batch: int | None = None) -> None:
        if batch is None:
            batch = observed_batch(shapes)
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
        self._readers = self._output_readers()
        self._terms: dict[tuple[int, Precision, bool], dict[str, Any]] = {}
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
        conv = any(self.graph.node_by_name[o].op_type in ("Conv", "ConvTranspose") for o in ops)
        pools = 0
        for t in acts:  # a MaxPool reading the quantizer runs in its format (uint8 Q -> MaxPool -> DQ, ...)
            for node in self.graph.consumers.get(t, []):
                if node.op_type == "MaxPool" and node.input[0] == t:
                    pools += self._per_sample(t, shapes) or 0
        return _GroupBase(name=name, macs=int(macs), weight_elems=self.graph.weight_count(weights),
                          act_elems=elems, pool_elems=pools, has_conv=conv)

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

    def _output_readers(self) -> list[list[int]]:
        """For each group, the groups owning the activation quantizers its ops' outputs reach, looking
        forward through ops that belong to no group (Relu, MaxPool, Reshape, ...): the quantizers a fused
        integer kernel would have to produce."""
        op_group = {op: i for i, g in enumerate(self.graph.groups) for op in g.ops}
        owner = {a: i for i, g in enumerate(self.graph.groups) for a in g.activations}
        readers: list[list[int]] = [[] for _ in self._groups]
        for t, j in owner.items():
            node = self.graph.producer.get(t)
            for _ in range(16):  # a short chain of group-less ops back to the producing group
                if node is None or node.name in op_group:
                    break
                first = next((i for i in node.input if i and i not in self.graph.initializers), None)
                node = self.graph.producer.get(first) if first else None
            if node is not None and node.name in op_group:
                readers[op_group[node.name]].append(j)
        return [sorted(set(r)) for r in readers]

    def _fusable(self, i: int, precs: list[Precision]) -> bool:
        """Whether group ``i``'s outputs allow a fused integer kernel under ``precs``: every reader quantizes
        them to 8-bit integers, or (MatMul/Gemm only, which can produce float) reads them as float."""
        float_reader = not self._readers[i]
        for j in self._readers[i]:
            prec = precs[j]
            if prec.is_float or prec.acts_float:
                float_reader = True
            elif prec.act_bits != 8:
                return False
        return not (float_reader and self._groups[i].has_conv)

    # -- estimates --------------------------------------------------------------------------------
    def _group_terms(self, i: int, prec: Precision, fusable: bool) -> dict[str, Any]:
        """Per-sample cost terms of group ``i`` at ``prec`` (cached); ``ms`` is the group's estimate."""
        key = (i, prec, fusable if self.target.qdq is not None else True)
        hit = self._terms.get(key)
        if hit is None:
            hit = self._qdq_terms(self._groups[i], prec, fusable) if self.target.qdq is not None else \
                self._roofline_terms(self._groups[i], prec)
            self._terms[key] = hit
        return hit

    def _roofline_terms(self, b: _GroupBase, prec: Precision) -> dict[str, Any]:
        tgt = self.target
        compute_ms = b.macs / (tgt.throughput(prec) * 1e9) * 1e3
        nbytes = b.weight_elems * prec.weight_bits / 8 / self.batch + b.act_elems * prec.act_bits / 8
        memory_ms = nbytes / (float(tgt.bandwidth_gbps or 0.0) * 1e9) * 1e3
        return {"throughput_key": tgt.key_for(prec), "compute_ms": compute_ms, "memory_ms": memory_ms,
                "bound": "compute" if compute_ms >= memory_ms else "memory",
                "ms": max(compute_ms, memory_ms) + tgt.overhead_us_per_layer / 1e3 / self.batch}

    def _qdq_terms(self, b: _GroupBase, prec: Precision, fusable: bool) -> dict[str, Any]:
        q = self.target.qdq
        assert q is not None
        mode = qdq_mode(prec, b.macs, fusable)
        act = activation_class(prec, mode)
        wcls = weight_class(prec) if mode == "qdq" else None
        mac_ms = b.macs * (q.ns_per_conv_mac if b.has_conv else q.ns_per_matmul_mac)[mode] * 1e-6
        act_ms = (b.act_elems * q.ns_per_activation[act] + b.pool_elems * q.ns_per_pool_element[act]) * 1e-6
        wdq_ms = b.weight_elems * q.ns_per_weight_dequant[wcls] * 1e-6 / self.batch if wcls else 0.0
        overhead_ms = self.target.overhead_us_per_layer / 1e3 / self.batch
        return {"mode": mode, "activation_class": act, "weight_dequant": wcls, "mac_ms": mac_ms,
                "activation_ms": act_ms, "weight_dequant_ms": wdq_ms, "ms": mac_ms + act_ms + wdq_ms + overhead_ms}

    def _precisions(self, profile: Profile) -> list[Precision]:
        assign = dict(profile.assignment)
        return [assign.get(name, FP32) for name in self._group_names]

    def latency_ms(self, profile: Profile) -> float:
        """Estimated latency (ms) per sample at ``profile``, run in batches of ``batch`` samples."""
        cached = self._profiles.get(profile)
        if cached is not None:
            self._profiles.move_to_end(profile)
            return cached
        precs = self._precisions(profile)
        total = 0.0
        for i, prec in enumerate(precs):
            total += self._group_terms(i, prec, self._fusable(i, precs))["ms"]
        self._profiles[profile] = total
        if len(self._profiles) > self.PROFILE_CACHE:
            self._profiles.popitem(last=False)
        return total

    def features(self, profile: Profile) -> dict[str, float]:
        """Per-sample units the qdq_runtime coefficients multiply (``conv:<mode>`` / ``matmul:<mode>`` MACs,
        ``act:<class>``,
        ``wdq:<bits>`` per run / batch, ``layers`` / batch), summed over groups; for fitting a target."""
        precs = self._precisions(profile)
        out: dict[str, float] = {}
        for i, prec in enumerate(precs):
            b = self._groups[i]
            mode = qdq_mode(prec, b.macs, self._fusable(i, precs))
            wcls = weight_class(prec) if mode == "qdq" else None
            act = activation_class(prec, mode)
            terms = [(f"{'conv' if b.has_conv else 'matmul'}:{mode}", b.macs), (f"act:{act}", b.act_elems),
                     (f"pool:{act}", b.pool_elems), ("layers", 1.0 / self.batch)]
            if wcls:
                terms.append((f"wdq:{wcls}", b.weight_elems / self.batch))
            for key, value in terms:
                out[key] = out.get(key, 0.0) + float(value)
        return out

    def per_layer(self, profile: Profile) -> list[dict[str, object]]:
        """One row per group (per sample): precision, MACs, bytes, the target's cost terms, and ms."""
        precs = self._precisions(profile)
        rows: list[dict[str, object]] = []
        for i, b in enumerate(self._groups):
            prec = precs[i]
            rows.append({"group": b.name, "precision": prec.name, "macs": b.macs,
                         "weight_bytes": b.weight_elems * prec.weight_bits / 8,
                         "activation_bytes": b.act_elems * prec.act_bits / 8,
                         **self._group_terms(i, prec, self._fusable(i, precs))})
        return rows
