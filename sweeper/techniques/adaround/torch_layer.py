"""One AdaRound layer in PyTorch: ``y = layer(x, w)`` with ONNX's attributes, the simulation's bias and the fused
ops after it, differentiable in the weight. PyTorch is imported inside the functions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx

from sweeper.model.graph import ModelGraph
from sweeper.quant.precision import Precision
from sweeper.techniques.adaround.layers import Layer, attrs, const_value


def _bias(graph: ModelGraph, table: Any, node: onnx.NodeProto, prec: Precision) -> np.ndarray | None:
    """The bias as the simulation adds it: int32-rounded when it is a bias quantizer, else as stored."""
    if node.op_type == "MatMul" or len(node.input) < 3 or not node.input[2]:
        return None
    b = node.input[2]
    if b in graph.bias_quantizers:
        return table.bias_value(b, prec)
    return np.array(const_value(graph, b), np.float32)


def _conv_fn(node: onnx.NodeProto, nd: int, bias: Any) -> Callable[[Any, Any], Any]:
    """Conv / ConvTranspose with ONNX's attributes; asymmetric pads by padding (Conv) or cropping
    (ConvTranspose) explicitly."""
    import torch.nn.functional as F  # noqa: N812

    a = attrs(node)
    pads = list(a.get("pads", [0] * 2 * nd))
    begin, end = pads[:nd], pads[nd:]
    stride, dil, group = a.get("strides", [1] * nd), a.get("dilations", [1] * nd), a.get("group", 1)
    if node.op_type == "Conv":
        conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
        if begin == end:
            return lambda x, w: conv(x, w, bias, stride, begin, dil, group)
        torch_pad = [p for i in reversed(range(nd)) for p in (begin[i], end[i])]
        return lambda x, w: conv(F.pad(x, torch_pad), w, bias, stride, 0, dil, group)
    convt = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[nd - 1]
    out_pad = a.get("output_padding", [0] * nd)

    def transposed(x: Any, w: Any) -> Any:
        y = convt(x, w, bias, stride, 0, out_pad, group, dil)
        crop = tuple(slice(begin[i], y.shape[2 + i] - end[i]) for i in range(nd))
        return y[(slice(None), slice(None), *crop)]

    return transposed


def _op_fn(graph: ModelGraph, node: onnx.NodeProto, bias: Any) -> Callable[[Any, Any], Any]:
    """``y = op(x, w)`` for the layer's op, with its bias."""
    import torch

    if node.op_type in ("Conv", "ConvTranspose"):
        return _conv_fn(node, graph.weight_array(node.input[1]).ndim - 2, bias)
    if node.op_type == "MatMul":
        return torch.matmul
    a = attrs(node)
    alpha, beta, trans_a, trans_b = a.get("alpha", 1.0), a.get("beta", 1.0), a.get("transA", 0), a.get("transB", 0)

    def gemm(x: Any, w: Any) -> Any:
        x = x.t() if trans_a else x
        y = x @ (w.t() if trans_b else w)
        if alpha != 1.0:
            y = y * alpha
        return y if bias is None else y + (bias if beta == 1.0 else bias * beta)

    return gemm


def _post_fn(graph: ModelGraph, node: onnx.NodeProto) -> Callable[[Any], Any]:
    """One fused op after the layer (an Add of a constant or an activation) in PyTorch."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    a, t = attrs(node), node.op_type
    consts = [None if not i else const_value(graph, i) for i in node.input]
    if t == "Add":
        c = torch.from_numpy(np.array(next(v for v in consts if v is not None), np.float32))
        return lambda y: y + c
    if t == "Clip":
        lo = float(consts[1]) if len(consts) > 1 and consts[1] is not None else None
        hi = float(consts[2]) if len(consts) > 2 and consts[2] is not None else None
        return lambda y: torch.clamp(y, lo, hi)
    if t == "LeakyRelu":
        slope = float(a.get("alpha", 0.01))
        return lambda y: F.leaky_relu(y, slope)
    if t == "HardSigmoid":
        ha, hb = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
        return lambda y: torch.clamp(y * ha + hb, 0.0, 1.0)
    return {"Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "HardSwish": F.hardswish}[t]


def layer_forward(graph: ModelGraph, table: Any, layer: Layer, prec: Precision) -> Callable[[Any, Any], Any]:
    """``y = layer(x, w)`` in PyTorch: the op with the simulation's bias, then its fused ops."""
    import torch

    b = _bias(graph, table, layer.node, prec)
    op = _op_fn(graph, layer.node, None if b is None else torch.from_numpy(np.ascontiguousarray(b)))
    post = [_post_fn(graph, n) for n in layer.chain]

    def forward(x: Any, w: Any) -> Any:
        y = op(x, w)
        for f in post:
            y = f(y)
        return y

    return forward


def channel_axis(layer: Layer) -> int:
    """The output axis the reconstruction error sums over (channels; features for Gemm / MatMul)."""
    return 1 if layer.node.op_type in ("Conv", "ConvTranspose") else -1
