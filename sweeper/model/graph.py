"""ModelGraph: the prepared ONNX model analysed into layers, quantizers and quantizer groups.

Placement follows AIMET's default config semantics: float model inputs are quantized; outputs of compute
ops are quantized, except where the op is fused with the activation that follows it (supergroups);
data-movement ops get no output quantizer of their own; weights of Conv, ConvTranspose, Gemm and
MatMul-with-constant are quantized per channel; biases stay float (int32 at export).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

DATA_MOVEMENT = {
    "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Gather", "GatherElements", "Slice", "Concat",
    "MaxPool", "GlobalMaxPool", "Split", "Pad", "Identity", "Expand", "Tile", "DepthToSpace", "SpaceToDepth",
    "Dropout",
}
# ops whose outputs are not activations (shapes, masks, integer bookkeeping)
NOT_QUANTIZED = {"Shape", "Size", "Cast", "CastLike", "ConstantOfShape", "Range", "NonZero", "Equal", "Less",
                 "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "ArgMax", "ArgMin", "TopK"}
WEIGHT_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
# ops where an exact fake-quant can be applied after the op instead of before (monotone selection)
SINKABLE = {"MaxPool"}
MONOTONE_ACTIVATIONS = {"Relu", "Clip"}


@dataclass
class WeightQuantizer:
    """One weight initializer. A weight shared by several Conv/Gemm/MatMul is quantized once: every user
    reads the same quantized values, and all users belong to one quantizer group."""

    name: str  # initializer name
    op: str  # the first node that uses it as its weight
    axis: int | None  # per-channel axis (None: per tensor, also when the users disagree on the axis)
    bias: str | None = None  # the first user's bias (see ModelGraph.bias_quantizers for every user's)
    ops: list[str] = field(default_factory=list)  # every node that uses it as its weight


@dataclass
class BiasQuantizer:
    """A Conv/Gemm/ConvTranspose bias stored as int32 at (its op's input scale x weight scale)."""

    name: str  # initializer name
    op: str  # the node that adds it
    weight: str  # that node's weight quantizer


@dataclass
class QuantizerGroup:
    """The unit of precision choice: activation quantizers feeding a set of ops plus those ops' weights."""

    name: str
    ops: list[str] = field(default_factory=list)
    activations: list[str] = field(default_factory=list)
    weights: list[str] = field(default_factory=list)
    macs: int = 0

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "ops": self.ops, "activations": self.activations,
                "weights": self.weights, "macs": self.macs}


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


def _fused_with_consumer(node: onnx.NodeProto, consumer: onnx.NodeProto, consts: set[str]) -> bool:
    pair = (node.op_type, consumer.op_type)
    if pair in {("Conv", "Relu"), ("Conv", "Clip"), ("ConvTranspose", "Relu"), ("Gemm", "Relu"),
                ("Add", "Relu"), ("Conv", "HardSwish"), ("Gemm", "Clip")}:
        return True
    if pair == ("MatMul", "Add"):
        # a linear layer: MatMul with a constant weight followed by a constant bias
        return node.input[1] in consts and any(i in consts for i in consumer.input)
    return False


class ModelGraph:
    """Analysis of a prepared model: which tensors and weights get quantizers, how they group, MACs."""

    def __init__(self, model: onnx.ModelProto, dtypes: dict[str, int] | None = None) -> None:
        self.model = model
        g = model.graph
        self.initializers: dict[str, onnx.TensorProto] = {t.name: t for t in g.initializer}
        self.nodes: list[onnx.NodeProto] = list(g.node)
        for i, n in enumerate(self.nodes):
            if not n.name:
                n.name = f"{n.op_type}_{i}"
        self.node_by_name = {n.name: n for n in self.nodes}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in self.nodes:
            for o in n.output:
                self.producer[o] = n
            for i in n.input:
                if i:
                    self.consumers[i].append(n)
        self.input_names = [i.name for i in g.input if i.name not in self.initializers]
        self.output_names = [o.name for o in g.output]
        self.dtypes: dict[str, int] = {}
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            if vi.type.HasField("tensor_type"):
                self.dtypes[vi.name] = vi.type.tensor_type.elem_type
        if dtypes:
            self.dtypes.update(dtypes)
        self.constants = self._constant_tensors()
        self.dynamic = self._dynamic_tensors()
        self.subgraph_reads = self._subgraph_reads()
        self.weight_quantizers = self._weight_quantizers()
        self.bias_quantizers = self._bias_quantizers()
        self.activations = self._activation_quantizers()
        self.groups = self._groups()
        self.sim_location = {t: self._sink(t) for t in self.activations}

    # -- classification -------------------------------------------------------------------------
    def _constant_tensors(self) -> set[str]:
        consts = set(self.initializers)
        for n in self.nodes:
            if n.op_type == "Constant" or (n.input and all((not i) or i in consts for i in n.input)):
                consts.update(n.output)
        return consts

    def _dynamic_tensors(self) -> set[str]:
        dyn = set(self.input_names)
        for n in self.nodes:
            if any(i in dyn for i in n.input):
                dyn.update(o for o in n.output if o)
        return dyn

    def is_float(self, tensor: str) -> bool:
        return self.dtypes.get(tensor, onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT

    def weight_array(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.initializers[name])

    @staticmethod
    def _weight_axis(n: onnx.NodeProto, ndim: int) -> int | None:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Conv":
            return 0
        if n.op_type == "ConvTranspose":
            return 1 if attrs.get("group", 1) == 1 else None
        if n.op_type == "Gemm":
            return 0 if attrs.get("transB", 0) else 1
        return ndim - 1 if ndim >= 2 else None

    def _weight_quantizers(self) -> dict[str, WeightQuantizer]:
        out: dict[str, WeightQuantizer] = {}
        for n in self.nodes:
            if n.op_type not in WEIGHT_OPS or len(n.input) < 2 or n.input[1] not in self.initializers:
                continue
            w = n.input[1]
            arr = self.initializers[w]
            if arr.data_type != onnx.TensorProto.FLOAT:
                continue
            axis = self._weight_axis(n, len(arr.dims))
            if w in out:  # shared: one quantizer for every user
                wq = out[w]
                wq.ops.append(n.name)
                if wq.axis != axis:
                    wq.axis = None
                continue
            out[w] = WeightQuantizer(name=w, op=n.name, axis=axis, bias=self._bias_input(n), ops=[n.name])
        return out

    def _bias_input(self, n: onnx.NodeProto) -> str | None:
        if n.op_type in ("Conv", "Gemm", "ConvTranspose") and len(n.input) > 2 and n.input[2] in self.initializers:
            b = self.initializers[n.input[2]]
            if len(b.dims) == 1 and b.data_type == onnx.TensorProto.FLOAT:
                return n.input[2]
        return None

    def _bias_quantizers(self) -> dict[str, BiasQuantizer]:
        """Every weight op's bias; a bias initializer that several ops (or a subgraph) read stays float."""
        out: dict[str, BiasQuantizer] = {}
        for w, wq in self.weight_quantizers.items():
            for op in wq.ops:
                b = self._bias_input(self.node_by_name[op])
                if b is None:
                    continue
                readers = {c.name for c in self.consumers.get(b, [])}
                if readers == {op} and b not in self.subgraph_reads:
                    out[b] = BiasQuantizer(name=b, op=op, weight=w)
        return out

    def shared_biases(self) -> list[str]:
        """Biases left float because more than one node reads them (reported, never silent)."""
        found = {b for wq in self.weight_quantizers.values() for op in wq.ops
                 if (b := self._bias_input(self.node_by_name[op])) is not None}
        return sorted(found - set(self.bias_quantizers))

    # -- subgraphs ------------------------------------------------------------------------------
    def _subgraph_reads(self) -> set[str]:
        """Outer-scope tensors that If/Loop/Scan bodies read (implicit inputs)."""
        reads: set[str] = set()
        for n in self.nodes:
            for body in _bodies(n):
                reads |= _outer_reads(body)
        return reads

    def left_float(self) -> list[dict[str, object]]:
        """What the simulation and the export leave float, with the reason: If/Loop/Scan bodies (their
        weights and activations are not quantized; the node's inputs and outputs are, by the usual rules)
        and biases shared between nodes."""
        out: list[dict[str, object]] = []
        for n in self.nodes:
            bodies = _bodies(n)
            if not bodies:
                continue
            ops = [m for b in bodies for m in _all_nodes(b)]
            weights = sum(1 for m in ops if m.op_type in WEIGHT_OPS)
            params = sum(int(np.prod(t.dims)) for b in bodies for t in _all_initializers(b))
            out.append({"node": n.name, "op": n.op_type, "reason": "subgraph body is not quantized",
                        "body_nodes": len(ops), "body_weight_ops": weights, "body_parameters": params})
        for b in self.shared_biases():
            out.append({"tensor": b, "reason": "bias read by several nodes: kept float"})
        out.extend(self._float_parameters())
        return out

    def _float_parameters(self) -> list[dict[str, object]]:
        """Constant float tensors (2-D and up) that no weight quantizer covers, per reading node: the
        weights of GRU/LSTM/RNN, embedding tables of a Gather, a constant first MatMul input..."""
        covered = set(self.weight_quantizers) | set(self.bias_quantizers)
        out: list[dict[str, object]] = []
        for n in self.nodes:
            tensors = [i for i in n.input if i in self.initializers and i not in covered
                       and self.initializers[i].data_type == onnx.TensorProto.FLOAT
                       and len(self.initializers[i].dims) >= 2]
            if n.op_type in DATA_MOVEMENT - {"Gather"} or not tensors:
                continue
            params = sum(int(np.prod(self.initializers[t].dims)) for t in tensors)
            out.append({"node": n.name, "op": n.op_type, "tensors": tensors, "parameters": params,
                        "reason": f"{n.op_type} parameters are not quantized (kept float)"})
        return out

    def _activation_quantizers(self) -> list[str]:
        acts: list[str] = [i for i in self.input_names if self.is_float(i)]
        for n in self.nodes:
            if n.op_type in DATA_MOVEMENT or n.op_type in NOT_QUANTIZED or n.op_type == "Constant":
                continue
            for o in n.output:
                if not o or o not in self.dynamic or not self.is_float(o):
                    continue
                cons = self.consumers.get(o, [])
                if o not in self.output_names and len(cons) == 1 and _fused_with_consumer(n, cons[0], self.constants):
                    continue
                acts.append(o)
        return acts

    # -- groups ---------------------------------------------------------------------------------
    def input_quantizers(self, node: onnx.NodeProto) -> list[str]:
        """Activation quantizers feeding ``node``, looking back through data-movement ops."""
        act_set = set(self.activations)
        found: list[str] = []
        stack = [i for i in node.input if i]
        seen: set[str] = set()
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            if t in act_set:
                found.append(t)
                continue
            p = self.producer.get(t)
            if p is not None and p.op_type in DATA_MOVEMENT:
                stack.extend(i for i in p.input[:1] if i) if p.op_type != "Concat" else stack.extend(p.input)
        return sorted(found)

    def _groups(self) -> list[QuantizerGroup]:
        uf = _UnionFind()
        op_members: dict[str, list[str]] = {}
        weights_by_op = defaultdict(list)
        for wq in self.weight_quantizers.values():
            for op in wq.ops:
                weights_by_op[op].append(wq.name)
        for n in self.nodes:
            if n.op_type in DATA_MOVEMENT:
                continue
            members = [f"a:{t}" for t in self.input_quantizers(n)] + [f"w:{w}" for w in weights_by_op.get(n.name, [])]
            if not members:
                continue
            op_members[n.name] = members
            uf.find(f"op:{n.name}")
            for m in members:
                uf.union(f"op:{n.name}", m)
        # activation quantizers nobody consumes (model outputs) join the op that produced them
        consumed = {m for ms in op_members.values() for m in ms}
        for t in self.activations:
            if f"a:{t}" in consumed:
                continue
            p = self.producer.get(t)
            while p is not None and p.op_type in DATA_MOVEMENT and p.input:
                p = self.producer.get(p.input[0])
            if p is not None and p.name in op_members:
                uf.union(f"op:{p.name}", f"a:{t}")
            else:
                uf.find(f"a:{t}")
        by_root: dict[str, QuantizerGroup] = {}
        order = {n.name: i for i, n in enumerate(self.nodes)}
        keys = [f"a:{t}" for t in self.activations] + [f"w:{w}" for w in self.weight_quantizers]
        keys += [f"op:{o}" for o in op_members]
        for k in keys:
            root = uf.find(k)
            grp = by_root.setdefault(root, QuantizerGroup(name=""))
            kind, _, name = k.partition(":")
            members = {"a": grp.activations, "w": grp.weights, "op": grp.ops}[kind]
            if name not in members:
                members.append(name)
        groups = []
        for grp in by_root.values():
            grp.ops.sort(key=lambda o: order[o])
            if grp.ops:
                grp.name = grp.ops[0]
            else:
                grp.name = grp.activations[0] if grp.activations else grp.weights[0]
            groups.append(grp)
        groups.sort(key=lambda gr: min([order.get(o, 10**9) for o in gr.ops] or [-1]))
        return groups

    def group_of(self) -> dict[str, str]:
        """Quantizer (activation tensor or weight name) -> group name."""
        out: dict[str, str] = {}
        for g in self.groups:
            for a in g.activations:
                out[a] = g.name
            for w in g.weights:
                out[w] = g.name
        return out

    def _sink(self, t: str) -> str:
        """Where the simulation applies ``t``'s fake-quant: after a following MaxPool when that is exact
        (fake-quant is monotone, so it commutes with max) and cheaper (fewer elements)."""
        loc = t
        while loc not in self.output_names:
            cons = self.consumers.get(loc, [])
            if len(cons) != 1 or cons[0].op_type not in SINKABLE or cons[0].input[0] != loc:
                break
            loc = cons[0].output[0]
        return loc

    # -- costs ----------------------------------------------------------------------------------
    def compute_macs(self, shapes: dict[str, tuple[int, ...]], batched: bool = True) -> dict[str, int]:
        """MACs of each op with weights or a MatMul, from observed shapes: per sample when the data is batched
        along axis 0, per model run otherwise (feeds passed as given: a fixed batch of 1, state inputs)."""
        macs: dict[str, int] = {}
        for n in self.nodes:
            if n.op_type not in WEIGHT_OPS or n.output[0] not in shapes:
                continue
            out = shapes[n.output[0]]
            per_sample_out = int(np.prod(out[1:])) if batched and len(out) > 1 else int(np.prod(out))
            if n.op_type in ("Conv", "ConvTranspose"):
                w = self._shape_of(n.input[1], shapes)
                if w is None:
                    continue
                if n.op_type == "Conv":
                    macs[n.name] = per_sample_out * int(np.prod(w[1:]))
                else:
                    inp = shapes.get(n.input[0])
                    if inp is None:
                        continue
                    macs[n.name] = int(np.prod(inp[1:] if batched else inp)) * int(np.prod(w[1:]))
            else:
                a = self._shape_of(n.input[0], shapes)
                if a is None:
                    continue
                k = a[-1] if n.op_type == "MatMul" else None
                if n.op_type == "Gemm":
                    attrs = {x.name: onnx.helper.get_attribute_value(x) for x in n.attribute}
                    k = a[0] if attrs.get("transA", 0) else a[-1]
                macs[n.name] = per_sample_out * int(k or 0)
        for g in self.groups:
            g.macs = sum(macs.get(o, 0) for o in g.ops)
        return macs

    def _shape_of(self, t: str, shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...] | None:
        if t in self.initializers:
            return tuple(self.initializers[t].dims)
        return shapes.get(t)

    def weight_count(self, names: list[str]) -> int:
        return sum(int(np.prod(self.initializers[w].dims)) for w in names)


def _bodies(n: onnx.NodeProto) -> list[onnx.GraphProto]:
    out: list[onnx.GraphProto] = []
    for a in n.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            out.append(a.g)
        elif a.type == onnx.AttributeProto.GRAPHS:
            out.extend(a.graphs)
    return out


def _all_nodes(g: onnx.GraphProto) -> list[onnx.NodeProto]:
    out: list[onnx.NodeProto] = []
    for n in g.node:
        out.append(n)
        for b in _bodies(n):
            out.extend(_all_nodes(b))
    return out


def _all_initializers(g: onnx.GraphProto) -> list[onnx.TensorProto]:
    out = list(g.initializer)
    for n in g.node:
        if n.op_type == "Constant":
            out.extend(a.t for a in n.attribute if a.type == onnx.AttributeProto.TENSOR)
        for b in _bodies(n):
            out.extend(_all_initializers(b))
    return out


def _outer_reads(g: onnx.GraphProto) -> set[str]:
    """Names a body reads that it does not define (nested bodies included)."""
    defined = {i.name for i in g.input} | {t.name for t in g.initializer}
    reads: set[str] = set()
    for n in g.node:
        reads.update(i for i in n.input if i and i not in defined)
        for b in _bodies(n):
            reads |= _outer_reads(b) - defined
        defined.update(n.output)
    return reads - defined
