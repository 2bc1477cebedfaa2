"""QuantSim: one ONNX Runtime session per simulation; a Profile is applied by changing inputs only.

The simulation graph is built once:

* Conv, ConvTranspose and Gemm layers (with the Relu/Clip fused after them and a MaxPool that follows)
  become an ``If`` chain with one branch per precision the sweep may assign; each branch holds that
  precision's fake-quantized weight and int32-rounded bias as *constants*, so ONNX Runtime keeps its
  blocked-layout kernels where :func:`sim_mode` allows them (weights fed as run-time inputs cost 1.9x on a
  CNN). A run-time flag picks the branch: weight quantization costs nothing at run time.
* Other weights (MatMul) are run-time inputs holding precomputed fake-quantized values.
* Each activation quantizer is an ``If`` on run-time flags: the 8-bit branch is a plain
  QuantizeLinear/DequantizeLinear pair (the kernels the exported model runs, so sim = export); other bit
  16-bit is the same pair in a 16-bit container; 2- and 4-bit clip to their grid in the 8-bit container
  (as the export does); fp16 is a Cast round trip; off is Identity.
* A fake-quant followed by a MaxPool is applied after it (exact: fake-quant is monotone and commutes with
  max; 4x fewer elements on a CNN).

All values are computed exactly as DequantizeLinear computes them, so the exported QDQ model reproduces
the simulation bit for bit in the session options of the model's mode (:func:`sim_mode`,
``sweeper.model.session.reference_session``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sweeper.model.graph import ModelGraph
from sweeper.model.opset import MS_DOMAIN, ai_onnx_opset, int_container, q16_domain
from sweeper.model.session import LAYOUT, PLAIN, BoundRunner, ort_session
from sweeper.quant.encoding import Encoding
from sweeper.quant.fp16 import FP16_MAX
from sweeper.quant.precision import DEFAULT_CANDIDATES, FP32, Precision
from sweeper.quant.profile import Profile
from sweeper.sim.encodings import EncodingTable

FP16_LO, FP16_HI = "sweeper::fp16_lo", "sweeper::fp16_hi"  # float16 saturation bounds (outer-scope constants)
BRANCHED_OPS = {"Conv", "ConvTranspose", "Gemm"}
CHAIN_OPS = {"Relu", "Clip", "MaxPool"}


_SCALARS: dict[tuple[str, bytes], np.ndarray] = {}


def _scalar(value: object, dtype: type) -> np.ndarray:
    """A 0-d array, one shared object per (dtype, bytes): a profile switch re-binds only the run-time inputs
    whose array object changed (:class:`BoundRunner`), so equal values must be the same object (keyed by
    bytes: -0.0 and 0.0 stay apart). Never written to."""
    arr = np.array(value, dtype=dtype)
    return _SCALARS.setdefault((arr.dtype.str, arr.tobytes()), arr)


@dataclass
class _Layer:
    """A weight op plus the ops fused after it, simulated as one If chain over precisions."""

    weight: str
    nodes: list[onnx.NodeProto]
    output: str  # the chain's last output

    @property
    def flag_prefix(self) -> str:
        return f"{self.weight}::is_"


def find_layers(g: ModelGraph) -> dict[str, _Layer]:
    """Weight ops simulated as If branches, each with the Relu/Clip/MaxPool chain fused after it.

    Only a weight that its op alone reads becomes branch constants; a shared weight (several ops, or a
    subgraph, read it) is a run-time input that every reader sees quantized, as in the export."""
    fq_locations = {g.sim_location[t] for t in g.activations}
    outputs = set(g.output_names)
    layers: dict[str, _Layer] = {}
    for w, wq in g.weight_quantizers.items():
        node = g.node_by_name[wq.op]
        if node.op_type not in BRANCHED_OPS or node.input[1] != w:
            continue
        if {c.name for c in g.consumers.get(w, [])} != {node.name} or w in g.subgraph_reads:
            continue
        chain = [node]
        out = node.output[0]
        while out not in fq_locations and out not in outputs:
            cons = g.consumers.get(out, [])
            if len(cons) != 1 or cons[0].op_type not in CHAIN_OPS or cons[0].input[0] != out:
                break
            if any(i and i in g.dynamic and i != out for i in cons[0].input):
                break
            chain.append(cons[0])
            out = cons[0].output[0]
        layers[w] = _Layer(weight=w, nodes=chain, output=out)
    return layers


# What ONNX Runtime does to an op that reads a Conv's output directly (no Q/DQ pair between, i.e. an activation
# quantizer left float), which the simulation's If boundaries never allow: its NCHWc transformer converts
# GlobalAveragePool, BatchNormalization (into a depthwise Conv), Sigmoid and Tanh to blocked-layout kernels
# that compute in another order; an only consumer is fused into the Conv (Add/Sum as its "Sum" input,
# activations, and ConvAdd/ConvMul/ConvBN folding). Copies, max/min, element-wise ops on a shared output and
# the activations fused by ConvActivationFusion but not by the NCHWc transformer (HardSigmoid, HardSwish,
# LeakyRelu: measured, the same bits fused or not) give the same results either way.
LAYOUT_UNSAFE_READERS = {"GlobalAveragePool", "BatchNormalization", "Sigmoid", "Tanh", "Resize", "Upsample"}
LAYOUT_SAFE_ONLY_READERS = {"Conv", "MaxPool", "AveragePool", "GlobalMaxPool", "Relu", "Clip", "Concat",
                            "HardSigmoid", "HardSwish", "LeakyRelu",
                            "Transpose", "Flatten", "Reshape", "Gemm", "MatMul", "Split", "Slice", "Squeeze",
                            "Unsqueeze", "Shape"}


def sim_mode(g: ModelGraph, layers: dict[str, _Layer] | None = None) -> str:
    """LAYOUT when every quantized weight of ``g`` is a branch constant of the simulation (so ONNX Runtime's
    layout transformer sees the same constant weights in the simulation and in the export, whose weight
    DequantizeLinear nodes it folds) and no Conv layer's output is read in a way the transformer would
    compute differently without the simulation's If boundary (above); PLAIN otherwise (see
    ``sweeper.model.session``). The one rule both the simulation's sessions and the exporter's metadata
    follow. ``layers``: :func:`find_layers` of ``g``, when the caller has them."""
    layers = find_layers(g) if layers is None else layers
    if set(layers) != set(g.weight_quantizers):
        return PLAIN
    outputs = set(g.output_names)
    for layer in layers.values():
        if layer.nodes[0].op_type != "Conv":
            continue
        readers = g.consumers.get(layer.output, [])
        if any(r.op_type in LAYOUT_UNSAFE_READERS for r in readers):
            return PLAIN
        if len(readers) == 1 and layer.output not in outputs and readers[0].op_type not in LAYOUT_SAFE_ONLY_READERS:
            return PLAIN
    return LAYOUT


def probe_tensor(g: ModelGraph, group: str) -> str:
    """The tensor that stands for a group's layer output in the simulation graph (the end of its fused
    chain, before the next fake-quant)."""
    grp = next(x for x in g.groups if x.name == group)
    if not grp.ops:
        return grp.activations[0]
    last = g.node_by_name[grp.ops[-1]]
    for layer in find_layers(g).values():
        if any(n.name == last.name for n in layer.nodes):
            return layer.output
    return last.output[0]


def container_zero_point(enc: Encoding, signed: bool) -> int:
    """The zero point of an integer activation encoding in the simulation's container (signed or not, by the
    experiment's ``act_symmetric``), whatever container the encoding itself would be exported in (an encoding
    loaded from a file may be of the other kind). The grid is the same: ``(q - zp) * scale`` gives the
    export's float values bit for bit, and every zero point fits (``-offset`` in [0, 2**bw - 1]; shifted down
    by ``2**(bw - 1)`` when signed)."""
    zp = -int(enc.offset[0])
    return zp - (1 << (enc.bitwidth - 1)) if signed else zp


class QuantSim:
    """The simulation model of ``graph`` with the encodings of ``table``.

    ``precisions`` are the precisions a profile may assign (every candidate of the sweep); fp32 is always
    included. Layers hold one constant branch per precision, computed from the table when the simulation is
    built: encodings set in the table afterwards (e.g. loaded from a file) need a new QuantSim.
    """

    def __init__(self, graph: ModelGraph, table: EncodingTable, threads: int = 1,
                 precisions: Iterable[Precision | str] | None = None, extra_outputs: Iterable[str] = ()) -> None:
        self.graph = graph
        self.table = table
        self.threads = threads
        self.signed = table.config.act_symmetric
        precs = [p if isinstance(p, Precision) else Precision.parse(p) for p in (precisions or [])]
        if not precs:
            precs = [Precision.parse(p) if isinstance(p, str) else p for p in DEFAULT_CANDIDATES]
        self.precisions: list[Precision] = list(dict.fromkeys([FP32, *precs]))
        self._act_cache: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        self._weight_cache: dict[tuple[str, str], np.ndarray] = {}
        self.extra_outputs = list(extra_outputs)
        self.layers = find_layers(graph)
        self.mode = sim_mode(graph, self.layers)
        self.model = self._build()
        self.session = self._session()
        self._runner = BoundRunner(self.session)
        self.input_names = graph.input_names
        self.bound: dict[str, np.ndarray] = {}
        self.profile: Profile | None = None

    # -- building ---------------------------------------------------------------------------------
    def _build(self) -> onnx.ModelProto:
        g = self.graph
        src = g.model
        self._q16_domain = q16_domain(ai_onnx_opset(src))
        t8, t16 = int_container(8, self.signed), int_container(16, self.signed)  # the export's containers
        in_layers = {n.name for layer in self.layers.values() for n in layer.nodes}
        layer_by_first = {layer.nodes[0].name: layer for layer in self.layers.values()}
        layer_ops = {layer.nodes[0].name for layer in self.layers.values()}
        bound_params = {w for w in g.weight_quantizers if w not in self.layers}
        bound_params |= {b for b, bq in g.bias_quantizers.items() if bq.op not in layer_ops}
        moved = set(self.layers) | {b for b, bq in g.bias_quantizers.items() if bq.op in layer_ops}
        new_inputs = list(src.graph.input)
        for name in sorted(bound_params):
            init = g.initializers[name]
            new_inputs.append(helper.make_tensor_value_info(name, init.data_type, list(init.dims)))
        still_used = {i for n in src.graph.node if n.name not in in_layers for i in n.input}
        still_used |= {i for layer in self.layers.values() for n in layer.nodes[1:] for i in n.input}
        inits = [t for t in src.graph.initializer
                 if t.name not in bound_params and (t.name not in moved or t.name in still_used)]
        inits += [numpy_helper.from_array(np.array(-FP16_MAX, np.float32), FP16_LO),
                  numpy_helper.from_array(np.array(FP16_MAX, np.float32), FP16_HI)]

        loc_to_tensor = {g.sim_location[t]: t for t in g.activations}
        outputs = set(g.output_names)
        renamed: dict[str, str] = {}
        fq_nodes_after: dict[str, list[onnx.NodeProto]] = {}
        for loc, t in loc_to_tensor.items():
            src_name = loc + "__raw" if loc in outputs else loc
            dst_name = loc if loc in outputs else loc + "__fq"
            fq_nodes_after[loc] = self._fake_quant(src_name, dst_name, t, t8, t16, new_inputs)
            if loc not in outputs:
                renamed[loc] = dst_name

        def emit(node: onnx.NodeProto, out_list: list[onnx.NodeProto]) -> None:
            for k, i in enumerate(node.input):
                if i in renamed:
                    node.input[k] = renamed[i]
            for k, o in enumerate(node.output):
                if o in outputs and o in fq_nodes_after:
                    node.output[k] = o + "__raw"
            out_list.append(node)

        nodes: list[onnx.NodeProto] = []
        for inp in g.input_names:
            nodes.extend(fq_nodes_after.get(inp, []))
        for n in src.graph.node:
            if n.name in in_layers and n.name not in layer_by_first:
                continue
            if n.name in layer_by_first:
                layer = layer_by_first[n.name]
                node = self._layer_node(layer, renamed, new_inputs)
                emit(node, nodes)
                nodes.extend(fq_nodes_after.get(layer.output, []))
                continue
            node = onnx.NodeProto()
            node.CopyFrom(n)
            emit(node, nodes)
            for o in n.output:
                nodes.extend(fq_nodes_after.get(o, []))
        graph_outputs = list(src.graph.output)
        known = {o.name for o in graph_outputs}
        for t in self.extra_outputs:  # probes (e.g. per-layer SQNR): raw values, before any fake-quant
            if t not in known:
                graph_outputs.append(helper.make_empty_tensor_value_info(t))
        graph = helper.make_graph(nodes, src.graph.name + "_sim", new_inputs, graph_outputs, inits)
        opsets = list(src.opset_import)
        if self._q16_domain == MS_DOMAIN and not any(o.domain == MS_DOMAIN for o in opsets):
            opsets.append(helper.make_opsetid(MS_DOMAIN, 1))
        return helper.make_model(graph, opset_imports=opsets, ir_version=src.ir_version)

    def _layer_node(self, layer: _Layer, renamed: dict[str, str], inputs: list[onnx.ValueInfoProto]) -> onnx.NodeProto:
        """If(is_p0){layer with constants of p0} else If(is_p1){...} ... else {layer with p_last}."""
        wq = self.graph.weight_quantizers[layer.weight]
        branches = []
        for k, prec in enumerate(self.precisions):
            tag = f"{layer.weight}::{prec.name}"
            inits = [numpy_helper.from_array(self.table.weight_value(layer.weight, prec), tag + "::w")]
            bias_name = layer.nodes[0].input[2] if len(layer.nodes[0].input) > 2 else ""
            bias = None  # a bias that is not a bias quantizer (shared) is read from the outer scope, float
            if bias_name in self.graph.bias_quantizers:
                bias = self.table.bias_value(bias_name, prec)
                inits.append(numpy_helper.from_array(bias, tag + "::b"))
            body = []
            prev = None
            for j, n in enumerate(layer.nodes):
                node = onnx.NodeProto()
                node.CopyFrom(n)
                node.name = f"{n.name}::{prec.name}"
                if j == 0:
                    node.input[0] = renamed.get(node.input[0], node.input[0])
                    node.input[1] = tag + "::w"
                    if bias is not None:
                        node.input[2] = tag + "::b"
                else:
                    node.input[0] = prev
                del node.output[1:]
                node.output[0] = f"{n.output[0]}::{prec.name}"
                prev = node.output[0]
                body.append(node)
            assert prev is not None
            branches.append(helper.make_graph(body, f"{tag}::branch{k}", [],
                                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)], inits))
        del wq
        current = branches[-1]
        node: onnx.NodeProto | None = None
        for k in range(len(branches) - 2, -1, -1):
            flag = layer.flag_prefix + self.precisions[k].name
            inputs.append(helper.make_tensor_value_info(flag, TensorProto.BOOL, []))
            out = layer.output if k == 0 else f"{layer.output}::sel{k}"
            node = helper.make_node("If", [flag], [out], then_branch=branches[k], else_branch=current,
                                    name=f"{layer.weight}::select{k}")
            if k > 0:
                current = helper.make_graph([node], f"{layer.weight}::chain{k}", [],
                                            [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)])
        if node is None:  # a single precision: no choice to make
            node = helper.make_node("If", [layer.flag_prefix + "fp32"], [layer.output], then_branch=current,
                                    else_branch=current, name=f"{layer.weight}::select0")
            inputs.append(helper.make_tensor_value_info(layer.flag_prefix + "fp32", TensorProto.BOOL, []))
        return node

    def _fake_quant(self, x: str, out: str, t: str, t8: int, t16: int,
                    inputs: list[onnx.ValueInfoProto]) -> list[onnx.NodeProto]:
        """If(m8){Q8/DQ8} else If(m16){Q16/DQ16} else If(mlow){Clip/Q8/DQ8} else If(mf16){Cast/Cast} else {x}.

        Bit widths below 8 clip to their grid inside the 8-bit container (what the export does too)."""
        p = f"{t}::"
        names = {k: p + k for k in ("scale", "zp8", "zp16", "lo", "hi", "m8", "m16", "mlow", "mf16")}
        types = {"scale": TensorProto.FLOAT, "zp8": t8, "zp16": t16, "lo": TensorProto.FLOAT,
                 "hi": TensorProto.FLOAT, "m8": TensorProto.BOOL, "m16": TensorProto.BOOL,
                 "mlow": TensorProto.BOOL, "mf16": TensorProto.BOOL}
        for k, n in names.items():
            inputs.append(helper.make_tensor_value_info(n, types[k], []))
        s, z8, z16 = names["scale"], names["zp8"], names["zp16"]

        def branch(tag: str, body: list[onnx.NodeProto], result: str) -> onnx.GraphProto:
            return helper.make_graph(body, f"{t}_{tag}", [],
                                     [helper.make_tensor_value_info(result, TensorProto.FLOAT, None)])

        def choose(flag: str, tag: str, then: onnx.GraphProto, other: onnx.GraphProto) -> onnx.GraphProto:
            node = helper.make_node("If", [names[flag]], [p + "r_" + tag], then_branch=then, else_branch=other)
            return branch("n_" + tag, [node], p + "r_" + tag)

        b8 = branch("q8", [
            helper.make_node("QuantizeLinear", [x, s, z8], [p + "q8"]),
            helper.make_node("DequantizeLinear", [p + "q8", s, z8], [p + "d8"]),
        ], p + "d8")
        b16 = branch("q16", [
            helper.make_node("QuantizeLinear", [x, s, z16], [p + "q16"], domain=self._q16_domain),
            helper.make_node("DequantizeLinear", [p + "q16", s, z16], [p + "d16"], domain=self._q16_domain),
        ], p + "d16")
        blow = branch("qlow", [
            helper.make_node("Clip", [x, names["lo"], names["hi"]], [p + "cl"]),
            helper.make_node("QuantizeLinear", [p + "cl", s, z8], [p + "ql"]),
            helper.make_node("DequantizeLinear", [p + "ql", s, z8], [p + "dl"]),
        ], p + "dl")
        bf = branch("f16", [  # saturating, as float16 deployments convert (sweeper.quant.fp16)
            helper.make_node("Clip", [x, FP16_LO, FP16_HI], [p + "sat"]),
            helper.make_node("Cast", [p + "sat"], [p + "h"], to=TensorProto.FLOAT16),
            helper.make_node("Cast", [p + "h"], [p + "f"], to=TensorProto.FLOAT),
        ], p + "f")
        bid = branch("off", [helper.make_node("Identity", [x], [p + "id"])], p + "id")
        rest = choose("m16", "16", b16, choose("mlow", "low", blow, choose("mf16", "f16", bf, bid)))
        return [helper.make_node("If", [names["m8"]], [out], then_branch=b8, else_branch=rest, name=p + "fq")]

    def _session(self):  # noqa: ANN202 - onnxruntime has no stubs
        return ort_session(self.model, self.threads, exact=self.mode)

    # -- profiles ---------------------------------------------------------------------------------
    def _act_feeds(self, t: str, enc: Encoding | None) -> dict[str, np.ndarray]:
        p = f"{t}::"
        sdt8 = helper.tensor_dtype_to_np_dtype(int_container(8, self.signed))
        sdt16 = helper.tensor_dtype_to_np_dtype(int_container(16, self.signed))
        feeds = {p + "scale": _scalar(1.0, np.float32), p + "zp8": _scalar(0, sdt8), p + "zp16": _scalar(0, sdt16),
                 p + "lo": _scalar(0.0, np.float32), p + "hi": _scalar(0.0, np.float32)}
        for flag in ("m8", "m16", "mlow", "mf16"):
            feeds[p + flag] = _scalar(False, np.bool_)
        if enc is None:
            return feeds
        if enc.dtype == "float":
            feeds[p + "mf16"] = _scalar(True, np.bool_)
            return feeds
        if enc.bitwidth > 16:
            raise ValueError(f"{t}: activation bit width {enc.bitwidth} is not simulated (at most 16)")
        feeds[p + "scale"] = _scalar(enc.scale[0], np.float32)
        zp = container_zero_point(enc, self.signed)
        if enc.bitwidth == 16:
            feeds[p + "m16"] = _scalar(True, np.bool_)
            feeds[p + "zp16"] = _scalar(zp, sdt16)
            return feeds
        feeds[p + "zp8"] = _scalar(zp, sdt8)
        if enc.bitwidth == 8:
            feeds[p + "m8"] = _scalar(True, np.bool_)
        else:
            lo, hi = enc.bounds()
            feeds[p + "mlow"] = _scalar(True, np.bool_)
            feeds[p + "lo"] = _scalar(lo[0], np.float32)
            feeds[p + "hi"] = _scalar(hi[0], np.float32)
        return feeds

    def _bound_weight(self, name: str, prec: Precision) -> np.ndarray:
        key = (name, prec.name)
        if key not in self._weight_cache:
            self._weight_cache[key] = self.table.weight_value(name, prec)
        return self._weight_cache[key]

    def feeds_for(self, profile: Profile) -> dict[str, np.ndarray]:
        """All run-time inputs that realize ``profile`` (branch flags, weights, quantizer parameters)."""
        feeds: dict[str, np.ndarray] = {}
        group_of = self.table.group_of
        for t in self.graph.activations:
            prec = profile[group_of[t]]
            key = (t, prec.name)
            if key not in self._act_cache:
                self._act_cache[key] = self._act_feeds(t, self.table.act_encoding(t, prec))
            feeds.update(self._act_cache[key])
        for w in self.graph.weight_quantizers:
            prec = profile[group_of[w]]
            layer = self.layers.get(w)
            if layer is not None:
                if prec not in self.precisions:
                    raise ValueError(f"precision {prec.name} was not among the precisions this QuantSim was "
                                     f"built for ({', '.join(p.name for p in self.precisions)})")
                for p in self.precisions[:-1] if len(self.precisions) > 1 else self.precisions:
                    feeds[layer.flag_prefix + p.name] = _scalar(p == prec, np.bool_)
                continue
            feeds[w] = self._bound_weight(w, prec)
        for b, bq in self.graph.bias_quantizers.items():
            if bq.weight in self.layers:
                continue
            prec = profile[group_of[bq.weight]]
            key = (b, prec.name)
            if key not in self._weight_cache:
                self._weight_cache[key] = self.table.bias_value(b, prec)
            feeds[b] = self._weight_cache[key]
        return feeds

    def apply(self, profile: Profile) -> None:
        """Switch the simulation to ``profile`` (no session rebuild)."""
        self.bound = self.feeds_for(profile)
        self._runner.bind(self.bound)
        self.profile = profile

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run the simulation under the applied profile."""
        if self.profile is None:
            raise RuntimeError("QuantSim.apply(profile) must be called before run()")
        return self._runner.run(feeds)

    def run_named(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Like :meth:`run`, keyed by output name (graph outputs and probes)."""
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.run(feeds), strict=True))
