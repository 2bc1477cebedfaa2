"""Which layers AdaRound optimises: a weight op (Conv, ConvTranspose, Gemm, MatMul) with the ops fused into its
reconstruction (a MatMul's constant bias Add, one activation that alone reads it), and why the others are left
at rounding to nearest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from sweeper.model.graph import ModelGraph

LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# activations reconstructed with the layer when they alone read its output (AIMET's module/activation pairs)
FUSED_ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish")


@dataclass
class Layer:
    """A weight op to reconstruct: its data input, the fused ops after it and the tensor they end at."""

    weight: str
    node: onnx.NodeProto
    chain: list[onnx.NodeProto]
    input: str
    output: str

    @property
    def activation(self) -> str | None:
        acts = [n.op_type for n in self.chain if n.op_type in FUSED_ACTIVATIONS]
        return acts[0] if acts else None


def const_value(graph: ModelGraph, name: str) -> np.ndarray | None:
    """The value of a constant tensor (initializer or Constant node output), or None."""
    if name in graph.initializers:
        return graph.weight_array(name)
    node = graph.producer.get(name)
    if node is not None and node.op_type == "Constant":
        for a in node.attribute:
            if a.name == "value":
                return onnx.numpy_helper.to_array(a.t)
    return None


def attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _unsupported(graph: ModelGraph, node: onnx.NodeProto) -> str | None:
    """Why this op cannot be reconstructed here (None: it can)."""
    a = attrs(node)
    auto_pad = a.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if node.op_type in ("Conv", "ConvTranspose"):
        if auto_pad not in ("NOTSET", "VALID"):
            return f"auto_pad {auto_pad}"
        if graph.weight_array(node.input[1]).ndim not in (3, 4, 5):
            return "not a 1-d, 2-d or 3-d convolution"
        if node.op_type == "ConvTranspose" and "output_shape" in a:
            return "output_shape attribute"
    if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2] and const_value(graph, node.input[2]) is None:
        return "Gemm with a run-time C input"
    if node.op_type == "MatMul" and graph.weight_array(node.input[1]).ndim < 2:
        return "MatMul with a 1-d weight"
    return None


def _only_reader(graph: ModelGraph, tensor: str) -> onnx.NodeProto | None:
    """The one op reading ``tensor`` (None when several or none do, or it is a model output)."""
    cons = graph.consumers.get(tensor, [])
    return cons[0] if len(cons) == 1 and tensor not in graph.output_names else None


def _chain(graph: ModelGraph, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """The ops reconstructed with ``node``: for a MatMul an Add of a constant (its bias), then one
    activation with constant parameters, each the only reader of the tensor before it."""
    out, chain = node.output[0], []
    for optional_add in ([True] if node.op_type == "MatMul" else []) + [False]:
        c = _only_reader(graph, out)
        ok = (c is not None and c.op_type in (("Add",) if optional_add else FUSED_ACTIVATIONS)
              and (optional_add or c.input[0] == out)
              and all(const_value(graph, i) is not None for i in c.input if i and i != out))
        if not ok:
            if optional_add:
                continue
            break
        assert c is not None
        chain.append(c)
        out = c.output[0]
    return chain


def find_layers(graph: ModelGraph) -> tuple[list[Layer], list[dict[str, str]]]:
    """The layers AdaRound optimises, in graph order, and the weight ops it leaves at nearest rounding
    (with the reason): shared weights, attributes the reconstruction does not implement."""
    layers, skipped = [], []
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    for w, wq in sorted(graph.weight_quantizers.items(), key=lambda kv: order[kv[1].op]):
        node = graph.node_by_name[wq.op]
        why = None
        if node.op_type not in LAYER_OPS:
            why = f"{node.op_type} is not a layer AdaRound optimises"
        elif len(wq.ops) > 1 or w in graph.subgraph_reads:
            why = "weight shared by several ops"
        elif node.input[1] != w:
            why = "the weight is not the op's second input"
        else:
            why = _unsupported(graph, node)
        if why:
            skipped.append({"weight": w, "op": node.name, "reason": why})
            continue
        chain = _chain(graph, node)
        layers.append(Layer(w, node, chain, node.input[0], chain[-1].output[0] if chain else node.output[0]))
    return layers, skipped
