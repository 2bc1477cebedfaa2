"""QDQ export: the prepared model with QuantizeLinear/DequantizeLinear pairs that reproduce the simulation.

What the exported model computes, quantizer by quantizer (``QuantSim.feeds_for`` is the reference):

* activation quantizers with an integer encoding get ``QuantizeLinear -> DequantizeLinear`` right after the
  tensor (at its original location; the simulation may apply it after a following MaxPool, which is the same
  function because fake-quant is monotone). Containers: 8-bit int8/uint8, 16-bit int16/uint16; 4/2-bit an
  8-bit container behind a ``Clip`` to the grid (``int4_activations=True``: int4/uint4, 2-bit behind a
  ``Clip``; see :func:`export_qdq`). Float16 encodings are a ``Cast`` round trip; no encoding: nothing;
* weights with an integer encoding are stored as integers (``Encoding.quantize``; 4/2-bit in int4/uint4)
  behind a (per-channel) ``DequantizeLinear``; float16 weights are stored as float16 behind a ``Cast``;
* Conv/Gemm/ConvTranspose biases are int32 behind a ``DequantizeLinear`` with the scale of
  ``EncodingTable.bias_encoding`` (input scale x weight scale, enlarged per channel where the bias would not
  fit int32: :mod:`sweeper.quant.bias`) wherever the simulation quantizes them, float16 in float16 groups;
* float16 values saturate to +-65504 (a ``Clip`` before the ``Cast``; :mod:`sweeper.quant.fp16`).

16-bit and 4-bit containers need ai.onnx opset 21, per-channel ``DequantizeLinear`` opset 13. Intake
already converts models to opset 21 (:mod:`sweeper.model.opset`), so a prepared model is exported at the
opset it was simulated at; a model given at a lower opset directly is converted here with the same
converter. If that fails, 16-bit quantizers use the ``com.microsoft`` QuantizeLinear/DequantizeLinear (ONNX
Runtime contrib ops, CPU EP) and 4/2-bit quantizers an 8-bit container behind a ``Clip`` to their grid.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sweeper.model.graph import ModelGraph
from sweeper.model.opset import (
    MS_DOMAIN,
    PER_CHANNEL_OPSET,
    Q16_OPSET,
    ai_onnx_opset,
    convert_opset,
    int_container,
)
from sweeper.model.session import REFERENCE_KEY
from sweeper.quant.bias import BiasEncoding
from sweeper.quant.encoding import Encoding
from sweeper.quant.fp16 import FP16_MAX, to_fp16
from sweeper.quant.profile import Profile
from sweeper.sim.encodings import EncodingTable
from sweeper.sim.quantsim import sim_mode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Container:
    dtype: int  # TensorProto element type
    domain: str  # "" or com.microsoft
    clip: bool  # clip to the encoding's grid before QuantizeLinear (grid narrower than the container)


def _container(enc: Encoding, wide_ok: bool, int4: bool = True) -> _Container:
    """The ONNX integer type an integer encoding is stored in (``wide_ok``: opset >= 21 available;
    ``int4``: 4/2-bit encodings may use int4/uint4, else an 8-bit container behind a Clip)."""
    bits = enc.bitwidth
    dtype = int_container(bits, enc.signed, int4_ok=wide_ok and int4)
    narrow = dtype in (TensorProto.INT4, TensorProto.UINT4)
    clip = bits < 8 and (not narrow or bits < 4)
    return _Container(dtype, MS_DOMAIN if bits == 16 and not wide_ok else "", clip)


def _int_tensor(name: str, dtype: int, values: np.ndarray) -> onnx.TensorProto:
    values = np.asarray(values, np.int64)
    if dtype in (TensorProto.INT4, TensorProto.UINT4):
        return helper.make_tensor(name, dtype, list(values.shape), values.ravel().tolist())
    np_dtype = helper.tensor_dtype_to_np_dtype(dtype)
    return numpy_helper.from_array(values.astype(np_dtype), name)


class _Names:
    """Fresh tensor/node names that clash with nothing in the model."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.used: set[str] = {t.name for t in g.initializer} | {i.name for i in g.input}
        self.used |= {o.name for o in g.output} | {v.name for v in g.value_info}
        for n in g.node:
            self.used.update(n.input)
            self.used.update(n.output)
            self.used.add(n.name)

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name


def _needs(graph: ModelGraph, table: EncodingTable, profile: Profile, int4_acts: bool) -> tuple[bool, bool]:
    """(needs opset 21 types, needs per-channel DequantizeLinear)."""
    wide = per_channel = False
    for t in graph.activations:
        enc = table.act_encoding(t, profile[table.group_of[t]])
        if enc is not None and enc.dtype == "int" and (enc.bitwidth == 16 or (enc.bitwidth < 8 and int4_acts)):
            wide = True
    for w in graph.weight_quantizers:
        enc = table.weight_encoding(w, profile[table.group_of[w]])
        if enc is not None and enc.dtype == "int":
            wide |= enc.bitwidth != 8
            per_channel |= enc.axis is not None
    per_channel |= any(table.bias_scale(b, profile) is not None for b in graph.bias_quantizers)
    return wide, per_channel


def _convert(model: onnx.ModelProto, target: int, graph: ModelGraph) -> onnx.ModelProto | None:
    """``model`` at ai.onnx opset ``target`` or None when the converter cannot do it faithfully."""

    def renamed(out: onnx.ModelProto) -> list[str]:  # the exporter addresses tensors by name
        names = {o for n in out.graph.node for o in n.output} | {i.name for i in out.graph.input}
        inits = {t.name for t in out.graph.initializer}
        return [t for t in graph.activations if t not in names] + [w for w in graph.weight_quantizers
                                                                    if w not in inits]

    return convert_opset(model, target, renamed)


def export_qdq(
    graph: ModelGraph, table: EncodingTable, profile: Profile, *, int4_activations: bool = False,
    u8_weights: bool = True,
    allow_convert: bool = True,
) -> onnx.ModelProto:
    """The model of ``graph`` quantized as ``profile`` with ``table``'s encodings, in QDQ form.

    Runs in a plain ``onnxruntime.InferenceSession`` (CPU EP) and reproduces ``QuantSim`` under ``profile``
    bit for bit in ``sweeper.model.session.reference_session`` (the session options are named in the model's
    metadata, key ``sweeper.sim_equals_export_under``).

    ``int4_activations``: 4/2-bit *activations* in int4/uint4 containers. Off by default: ONNX Runtime 1.32's
    QDQ graph transformers (ORT_ENABLE_ALL) reject such models (MaxPool propagation, QLinearConv fusion and
    Clip/Q fusion do not handle 4-bit types), while an 8-bit container behind a Clip to the 4/2-bit grid holds
    exactly the same values and runs at every optimization level. 4/2-bit *weights* always use int4/uint4.
    ``allow_convert=False`` skips the opset conversion (the fallback described in the module docstring).

    ``u8_weights`` (default): 8-bit symmetric weights are stored as uint8 with zero point 128 instead of int8
    with zero point 0, the same values exactly (the simulation is reproduced bit for bit either way). ONNX
    Runtime fuses Q/DQ into integer kernels at its default optimization level, and on x86 CPUs without VNNI its
    u8 x s8 kernels add pairs of products in saturating 16-bit arithmetic: measured here (AVX2, no VNNI) the
    MNIST example's w8a8 export then scores 92.34 % instead of 94.16 %, while u8 x u8 kernels do not saturate
    (94.16 %, 100 % agreement with the simulation). ``u8_weights=False`` keeps int8 weights (what
    integer-only toolchains that expect signed weights read).
    """
    model = onnx.ModelProto()
    model.CopyFrom(graph.model)
    for i, n in enumerate(model.graph.node):  # ModelGraph names unnamed nodes; keep that naming
        if not n.name:
            n.name = f"{n.op_type}_{i}"
    wide, per_channel = _needs(graph, table, profile, int4_activations)
    opset = ai_onnx_opset(model)
    wide_ok = opset >= Q16_OPSET
    target = max(opset, PER_CHANNEL_OPSET if per_channel else 10, Q16_OPSET if wide else 0)
    if target > opset:
        converted = _convert(model, target, graph) if allow_convert else None
        if converted is None and wide and per_channel and opset < PER_CHANNEL_OPSET and allow_convert:
            converted = _convert(model, PER_CHANNEL_OPSET, graph)
        if converted is not None:
            model = converted
            opset = ai_onnx_opset(model)
            wide_ok = opset >= Q16_OPSET
        elif opset < PER_CHANNEL_OPSET and per_channel:
            raise ValueError(
                f"cannot export: the model is at opset {opset}, per-channel DequantizeLinear needs opset "
                f"{PER_CHANNEL_OPSET} and onnx.version_converter could not convert it"
            )
    _Builder(graph, table, profile, model, wide_ok, int4_activations, u8_weights).run()
    if any(n.domain == MS_DOMAIN for n in model.graph.node) and not any(
        o.domain == MS_DOMAIN for o in model.opset_import
    ):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    if any(t.data_type in (TensorProto.INT4, TensorProto.UINT4) for t in model.graph.initializer):
        model.ir_version = max(model.ir_version, 10)
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                        REFERENCE_KEY: sim_mode(graph)})
    onnx.checker.check_model(model)
    return model


class _Builder:
    def __init__(self, graph: ModelGraph, table: EncodingTable, profile: Profile, model: onnx.ModelProto,
                 wide_ok: bool, int4_activations: bool, u8_weights: bool = True) -> None:
        self.graph, self.table, self.profile, self.model = graph, table, profile, model
        self.wide_ok = wide_ok
        self.int4_activations = int4_activations
        self.u8_weights = u8_weights
        self.names = _Names(model)
        self.inits: list[onnx.TensorProto] = []
        self.remove_inits: set[str] = set()

    def _const(self, base: str, tensor: onnx.TensorProto) -> str:
        tensor.name = self.names.fresh(base)
        self.inits.append(tensor)
        return tensor.name

    def run(self) -> None:
        g = self.model.graph
        outputs = {o.name for o in g.output}
        inputs = {i.name for i in g.input}
        param_nodes = self._params()

        # activations: nodes to insert after the producer of each quantized tensor
        after: dict[str, list[onnx.NodeProto]] = {}
        renamed: dict[str, str] = {}  # tensor -> the name its consumers read
        raw_name: dict[str, str] = {}  # graph outputs: new name of the producer's output
        for t in self.graph.activations:
            enc = self.table.act_encoding(t, self.profile[self.table.group_of[t]])
            if enc is None:
                continue
            if t in outputs and t not in inputs:
                src = raw_name[t] = self.names.fresh(t + "_raw")
                dst = t
            else:
                src, dst = t, self.names.fresh(t + "_qdq")
                renamed[t] = dst
            after[t] = self._act_nodes(t, src, dst, enc)

        nodes: list[onnx.NodeProto] = list(param_nodes)
        for i in g.input:
            nodes.extend(after.get(i.name, []))
        for n in g.node:
            for k, name in enumerate(n.input):
                if name in renamed:
                    n.input[k] = renamed[name]
            produced = list(n.output)
            for k, name in enumerate(n.output):
                if name in raw_name:
                    n.output[k] = raw_name[name]
            nodes.append(n)
            for name in produced:
                nodes.extend(after.get(name, []))
        for o in g.output:
            if o.name in renamed and o.name in inputs:
                raise ValueError(f"cannot export: quantized graph input {o.name!r} is also a graph output")
        kept = [t for t in g.initializer if t.name not in self.remove_inits]
        del g.node[:]
        g.node.extend(nodes)
        del g.initializer[:]
        g.initializer.extend(kept + self.inits)
        # initializers replaced by a DequantizeLinear/Cast output are no longer overridable graph inputs
        keep_inputs = [i for i in g.input if i.name not in self.remove_inits]
        del g.input[:]
        g.input.extend(keep_inputs)
        stale = [v for v in g.value_info if v.name not in self.remove_inits]
        del g.value_info[:]
        g.value_info.extend(stale)

    # -- activations ------------------------------------------------------------------------------
    def _act_nodes(self, t: str, src: str, dst: str, enc: Encoding) -> list[onnx.NodeProto]:
        fresh = self.names.fresh
        if enc.dtype == "float":  # saturating float16 round trip, as the simulation does
            h, sat = fresh(t + "_fp16"), fresh(t + "_fp16_saturated")
            lo = self._const(t + "_fp16_lo", numpy_helper.from_array(np.array(-FP16_MAX, np.float32), ""))
            hi = self._const(t + "_fp16_hi", numpy_helper.from_array(np.array(FP16_MAX, np.float32), ""))
            return [helper.make_node("Clip", [src, lo, hi], [sat], name=fresh(t + "_fp16_clip")),
                    helper.make_node("Cast", [sat], [h], to=TensorProto.FLOAT16, name=fresh(t + "_cast_fp16")),
                    helper.make_node("Cast", [h], [dst], to=TensorProto.FLOAT, name=fresh(t + "_cast_fp32"))]
        c = _container(enc, self.wide_ok, self.int4_activations)
        scale = self._const(t + "_scale", numpy_helper.from_array(np.array(enc.scale.ravel()[0], np.float32), ""))
        zp = self._const(t + "_zero_point", _int_tensor("", c.dtype, np.array(enc.zero_point.ravel()[0], np.int64)))
        nodes = []
        x = src
        if c.clip:
            lo, hi = enc.bounds()
            lo_n = self._const(t + "_clip_lo", numpy_helper.from_array(np.array(lo.ravel()[0], np.float32), ""))
            hi_n = self._const(t + "_clip_hi", numpy_helper.from_array(np.array(hi.ravel()[0], np.float32), ""))
            x = fresh(t + "_clipped")
            nodes.append(helper.make_node("Clip", [src, lo_n, hi_n], [x], name=fresh(t + "_clip")))
        q = fresh(t + "_quantized")
        nodes.append(helper.make_node("QuantizeLinear", [x, scale, zp], [q], name=fresh(t + "_QuantizeLinear"),
                                      domain=c.domain))
        nodes.append(helper.make_node("DequantizeLinear", [q, scale, zp], [dst],
                                      name=fresh(t + "_DequantizeLinear"), domain=c.domain))
        return nodes

    # -- weights and biases -----------------------------------------------------------------------
    def _params(self) -> list[onnx.NodeProto]:
        nodes: list[onnx.NodeProto] = []
        done: dict[str, list[onnx.NodeProto]] = {}
        for w in self.graph.weight_quantizers:
            enc = self.table.weight_encoding(w, self.profile[self.table.group_of[w]])
            if enc is not None:
                done[w] = self._weight_nodes(w, enc)
        for b, bq in self.graph.bias_quantizers.items():
            benc = self.table.bias_encoding(b, self.profile)
            if benc is not None:
                done[b] = self._bias_int32(b, benc)
            elif self.profile[self.table.group_of[bq.weight]].is_fp16:
                done[b] = self._fp16(b, self.graph.weight_array(b).astype(np.float32))
        for name, ns in done.items():
            self.remove_inits.add(name)
            nodes.extend(ns)
        return nodes

    def _fp16(self, name: str, arr: np.ndarray) -> list[onnx.NodeProto]:
        h = self._const(name + "_fp16", numpy_helper.from_array(to_fp16(arr), ""))
        return [helper.make_node("Cast", [h], [name], to=TensorProto.FLOAT, name=self.names.fresh(name + "_cast"))]

    def _weight_nodes(self, w: str, enc: Encoding) -> list[onnx.NodeProto]:
        arr = self.graph.weight_array(w).astype(np.float32)
        if enc.dtype == "float":
            return self._fp16(w, arr)
        c = _container(enc, self.wide_ok)
        q = self.table.weight_integers(w, enc)  # already within the encoding's grid: no Clip needed for weights
        attrs = {}
        if enc.axis is not None and arr.ndim > 0:
            scale = np.asarray(enc.scale, np.float32).ravel()
            zp = enc.zero_point.ravel()
            attrs["axis"] = int(enc.axis)
        else:
            scale = np.array(enc.scale.ravel()[0], np.float32)
            zp = np.array(enc.zero_point.ravel()[0], np.int64)
        if self.u8_weights and c.dtype == TensorProto.INT8 and enc.bitwidth == 8:
            # the same values as uint8 with the zero point moved by 128 (see export_qdq's u8_weights)
            c = _Container(TensorProto.UINT8, c.domain, c.clip)
            q, zp = q + 128, np.asarray(zp) + 128
        qn = self._const(w + "_quantized", _int_tensor("", c.dtype, q))
        sn = self._const(w + "_scale", numpy_helper.from_array(scale, ""))
        zn = self._const(w + "_zero_point", _int_tensor("", c.dtype, zp))
        return [helper.make_node("DequantizeLinear", [qn, sn, zn], [w], name=self.names.fresh(w + "_DequantizeLinear"),
                                 domain=c.domain, **attrs)]

    def _bias_int32(self, b: str, enc: BiasEncoding) -> list[onnx.NodeProto]:
        qn = self._const(b + "_quantized", numpy_helper.from_array(enc.q.astype(np.int32), ""))
        attrs = {}
        if enc.scale.size == 1:
            scale = np.array(enc.scale.ravel()[0], np.float32)
            zp = np.zeros((), np.int32)
        else:
            scale = enc.scale.ravel()
            zp = np.zeros(scale.shape, np.int32)
            attrs["axis"] = 0
        sn = self._const(b + "_scale", numpy_helper.from_array(scale.astype(np.float32), ""))
        zn = self._const(b + "_zero_point", numpy_helper.from_array(zp, ""))
        return [helper.make_node("DequantizeLinear", [qn, sn, zn], [b], name=self.names.fresh(b + "_DequantizeLinear"),
                                 **attrs)]
