"""An ONNX graph run as a ``torch.nn.Module``: initializers become parameters, nodes become torch ops.

Quantization-aware training (:mod:`sweeper.techniques.qat`) trains the *prepared* ONNX graph itself (BatchNorm
folded, names identical to the QuantSim's), so that every quantizer of the simulation has an exact place in
the torch model and the trained weights go back into the same initializers. Hooks let the caller transform
any tensor when it is produced (activation fake-quant) and any initializer when it is read (weight and bias
fake-quant). Only the ops below are supported; a graph with another op is refused up front, with every
unsupported op named.

Why under ``techniques``: it is the differentiable twin of the ONNX Runtime simulation that only training
techniques need (QAT now; gradient-based ones such as AdaQuant later). It imports torch at module level, so
nothing below the techniques layer may import it, and the steps import it only inside the functions that
train.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias
from onnx import helper, numpy_helper

from sweeper.errors import SweeperError

Hook = Callable[[torch.Tensor], torch.Tensor]
OpFn = Callable[[dict[str, Any], list[Any]], Any]


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _ints(t: Any) -> list[int]:
    """An int64 tensor input (shape, axes, pads) as a list."""
    return [int(v) for v in (t.tolist() if isinstance(t, torch.Tensor) else np.asarray(t).tolist())]


def _pads(x: torch.Tensor, pads: list[int], value: float = 0.0) -> tuple[torch.Tensor, list[int]]:
    """ONNX ``pads`` (begins then ends) as torch padding: symmetric pads go to the op, others to F.pad."""
    n = len(pads) // 2
    begin, end = pads[:n], pads[n:]
    if begin == end:
        return x, begin
    flat: list[int] = []
    for b, e in zip(reversed(begin), reversed(end), strict=True):
        flat += [b, e]
    return F.pad(x, flat, value=value), [0] * n


def _check_auto_pad(a: dict[str, Any], op: str) -> None:
    pad = a.get("auto_pad", b"NOTSET")
    pad = pad.decode() if isinstance(pad, bytes) else pad
    if pad not in ("NOTSET", "VALID"):
        raise NotImplementedError(f"{op} with auto_pad={pad}")


def _conv(a: dict[str, Any], x: list[Any]) -> torch.Tensor:
    _check_auto_pad(a, "Conv")
    inp, w = x[0], x[1]
    b = x[2] if len(x) > 2 else None
    nd = w.dim() - 2
    inp, pad = _pads(inp, list(a.get("pads", [0] * 2 * nd)))
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    return fn(inp, w, b, stride=a.get("strides", 1), padding=pad, dilation=a.get("dilations", 1),
              groups=a.get("group", 1))


def _conv_transpose(a: dict[str, Any], x: list[Any]) -> torch.Tensor:
    _check_auto_pad(a, "ConvTranspose")
    w = x[1]
    nd = w.dim() - 2
    pads = list(a.get("pads", [0] * 2 * nd))
    if pads[:nd] != pads[nd:] or "output_shape" in a:
        raise NotImplementedError("ConvTranspose with asymmetric pads or output_shape")
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[nd]
    return fn(x[0], w, x[2] if len(x) > 2 else None, stride=a.get("strides", 1), padding=pads[:nd],
              output_padding=a.get("output_padding", 0), groups=a.get("group", 1), dilation=a.get("dilations", 1))


def _gemm(a: dict[str, Any], x: list[Any]) -> torch.Tensor:
    A = x[0].transpose(0, 1) if a.get("transA", 0) else x[0]  # noqa: N806 - ONNX's names
    B = x[1].transpose(0, 1) if a.get("transB", 0) else x[1]  # noqa: N806
    y = a.get("alpha", 1.0) * (A @ B)
    if len(x) > 2 and x[2] is not None:
        y = y + a.get("beta", 1.0) * x[2]
    return y


def _pool(a: dict[str, Any], x: list[Any], kind: str) -> torch.Tensor:
    _check_auto_pad(a, kind)
    k = list(a["kernel_shape"])
    nd = len(k)
    fill = float("-inf") if kind == "MaxPool" else 0.0
    inp, pad = _pads(x[0], list(a.get("pads", [0] * 2 * nd)), fill)
    strides, ceil = a.get("strides", [1] * nd), bool(a.get("ceil_mode", 0))
    if kind == "MaxPool":
        fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd]
        return fn(inp, k, strides, pad, a.get("dilations", 1), ceil_mode=ceil)
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nd]
    if pad != list(a.get("pads", [0] * 2 * nd))[:nd] and a.get("count_include_pad", 0) == 0:
        raise NotImplementedError("AveragePool with asymmetric pads and count_include_pad=0")
    return fn(inp, k, strides, pad, ceil_mode=ceil, count_include_pad=bool(a.get("count_include_pad", 0)))


def _clip(a: dict[str, Any], x: list[Any]) -> torch.Tensor:
    lo = x[1] if len(x) > 1 and x[1] is not None else a.get("min")
    hi = x[2] if len(x) > 2 and x[2] is not None else a.get("max")
    return torch.clamp(x[0], min=lo, max=hi)


def _reshape(a: dict[str, Any], x: list[Any]) -> torch.Tensor:
    shape = _ints(x[1])
    if not a.get("allowzero", 0):
        shape = [x[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x[0].reshape(shape)


def _flatten(a: dict[str, Any], x: list[Any]) -> torch.Tensor:
    axis = a.get("axis", 1) % max(x[0].dim(), 1)
    lead = int(np.prod(x[0].shape[:axis])) if axis else 1
    return x[0].reshape(lead, -1)


def _axes(a: dict[str, Any], x: list[Any]) -> list[int] | None:
    if len(x) > 1 and x[1] is not None:
        return _ints(x[1])
    return list(a["axes"]) if "axes" in a else None


def _squeeze(a: dict[str, Any], x: list[Any]) -> torch.Tensor:
    axes = _axes(a, x)
    if axes is None:
        return x[0].squeeze()
    axes = sorted(ax % x[0].dim() for ax in axes)
    out = x[0]
    for ax in reversed(axes):
        out = out.squeeze(ax)
    return out


def _unsqueeze(a: dict[str, Any], x: list[Any]) -> torch.Tensor:
    axes = _axes(a, x) or []
    rank = x[0].dim() + len(axes)
    out = x[0]
    for ax in sorted(ax % rank for ax in axes):
        out = out.unsqueeze(ax)
    return out


def _reduce_mean(a: dict[str, Any], x: list[Any]) -> torch.Tensor:
    axes = _axes(a, x)
    keep = bool(a.get("keepdims", 1))
    if axes is None:
        return x[0].mean(dim=tuple(range(x[0].dim())), keepdim=keep)
    return x[0].mean(dim=tuple(axes), keepdim=keep)


def _pad(a: dict[str, Any], x: list[Any]) -> torch.Tensor:
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant" or (len(x) > 3 and x[3] is not None):
        raise NotImplementedError(f"Pad with mode={mode} or axes")
    value = float(x[2]) if len(x) > 2 and x[2] is not None and x[2].numel() else 0.0
    pads = _ints(x[1])
    n = len(pads) // 2
    flat: list[int] = []
    for b, e in zip(reversed(pads[:n]), reversed(pads[n:]), strict=True):
        flat += [b, e]
    return F.pad(x[0], flat, value=value)


def _batchnorm(a: dict[str, Any], x: list[Any]) -> torch.Tensor:
    return F.batch_norm(x[0], x[3], x[4], x[1], x[2], training=False, eps=a.get("epsilon", 1e-5))


def _cast(a: dict[str, Any], x: list[Any]) -> torch.Tensor:
    dtype = helper.tensor_dtype_to_np_dtype(a["to"])
    return x[0].to(torch.from_numpy(np.zeros(0, dtype)).dtype)


def _shape(a: dict[str, Any], x: list[Any]) -> torch.Tensor:
    dims = list(x[0].shape)[a.get("start", 0):a.get("end", None)]
    return torch.tensor(dims, dtype=torch.int64)


def _gather(a: dict[str, Any], x: list[Any]) -> torch.Tensor:
    axis = a.get("axis", 0) % x[0].dim()
    idx = x[1].long()
    out = torch.index_select(x[0], axis, idx.reshape(-1))
    return out.reshape(list(x[0].shape[:axis]) + list(idx.shape) + list(x[0].shape[axis + 1:]))


OPS: dict[str, OpFn] = {
    "Conv": _conv, "ConvTranspose": _conv_transpose, "Gemm": _gemm,
    "MatMul": lambda a, x: torch.matmul(x[0], x[1]),
    "Add": lambda a, x: x[0] + x[1], "Sub": lambda a, x: x[0] - x[1],
    "Mul": lambda a, x: x[0] * x[1], "Div": lambda a, x: x[0] / x[1],
    "Relu": lambda a, x: F.relu(x[0]), "Clip": _clip,
    "LeakyRelu": lambda a, x: F.leaky_relu(x[0], a.get("alpha", 0.01)),
    "Sigmoid": lambda a, x: torch.sigmoid(x[0]), "Tanh": lambda a, x: torch.tanh(x[0]),
    "HardSigmoid": lambda a, x: torch.clamp(a.get("alpha", 0.2) * x[0] + a.get("beta", 0.5), 0.0, 1.0),
    "HardSwish": lambda a, x: F.hardswish(x[0]),
    "Softmax": lambda a, x: torch.softmax(x[0], a.get("axis", -1)),
    "LogSoftmax": lambda a, x: torch.log_softmax(x[0], a.get("axis", -1)),
    "MaxPool": lambda a, x: _pool(a, x, "MaxPool"), "AveragePool": lambda a, x: _pool(a, x, "AveragePool"),
    "GlobalAveragePool": lambda a, x: x[0].mean(dim=tuple(range(2, x[0].dim())), keepdim=True),
    "GlobalMaxPool": lambda a, x: x[0].amax(dim=tuple(range(2, x[0].dim())), keepdim=True),
    "Flatten": _flatten, "Reshape": _reshape,
    "Transpose": lambda a, x: x[0].permute(a.get("perm", list(range(x[0].dim() - 1, -1, -1)))),
    "Concat": lambda a, x: torch.cat([t for t in x if t is not None], dim=a["axis"]),
    "Squeeze": _squeeze, "Unsqueeze": _unsqueeze, "ReduceMean": _reduce_mean, "Pad": _pad,
    "BatchNormalization": _batchnorm, "Identity": lambda a, x: x[0], "Dropout": lambda a, x: x[0],
    "Cast": _cast, "Shape": _shape, "Gather": _gather,
}


def unsupported_ops(model: onnx.ModelProto) -> list[str]:
    """Op types of ``model`` the interpreter cannot run (empty: it runs every node)."""
    bad = {n.op_type if not n.domain else f"{n.domain}.{n.op_type}" for n in model.graph.node
           if (n.domain not in ("", "ai.onnx") or n.op_type not in OPS) and n.op_type != "Constant"}
    return sorted(bad)


class OnnxModule(torch.nn.Module):
    """``model`` as a torch module. ``trainable`` initializers are ``nn.Parameter`` (float32), the others
    constant buffers. ``act_hooks[tensor]`` is applied to a tensor when it is produced (graph inputs
    included), ``param_hooks[initializer]`` to an initializer whenever a node reads it. ``forward`` takes
    the graph inputs in order and returns the first output alone when there is one, else a tuple."""

    def __init__(self, model: onnx.ModelProto, trainable: Iterable[str] = ()) -> None:
        super().__init__()
        bad = unsupported_ops(model)
        if bad:
            raise SweeperError("model", f"quantization-aware training does not support the op(s) {', '.join(bad)} "
                                        f"(supported: {', '.join(sorted(OPS))})")
        g = model.graph
        self.model = model
        self.nodes = [(n, _attrs(n)) for n in g.node]
        inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self.input_names = [i.name for i in g.input if i.name not in inits]
        self.output_names = [o.name for o in g.output]
        self.param_names = [n for n in inits if n in set(trainable) and inits[n].dtype == np.float32]
        self.params = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.from_numpy(inits[n].copy())) for n in self.param_names])
        self._param_index = {n: i for i, n in enumerate(self.param_names)}
        self.consts: dict[str, torch.Tensor] = {n: torch.from_numpy(np.array(v)) for n, v in inits.items()
                                                if n not in self._param_index}
        self.act_hooks: dict[str, Hook] = {}
        self.param_hooks: dict[str, Hook] = {}

    def value_of(self, name: str) -> torch.Tensor | None:
        """An initializer's current value (trained parameter or constant), before any hook."""
        if name in self._param_index:
            return self.params[self._param_index[name]]
        return self.consts.get(name)

    def _read(self, name: str, env: dict[str, Any]) -> Any:
        if not name:
            return None
        if name in env:
            return env[name]
        value = self.value_of(name)
        if value is None:
            raise KeyError(f"tensor {name!r} is read before it is produced")
        hook = self.param_hooks.get(name)
        return hook(value) if hook is not None else value

    def _produce(self, name: str, value: Any, env: dict[str, Any]) -> None:
        hook = self.act_hooks.get(name)
        env[name] = hook(value) if hook is not None else value

    def forward(self, *inputs: torch.Tensor) -> Any:
        if len(inputs) != len(self.input_names):
            raise TypeError(f"expected {len(self.input_names)} inputs ({', '.join(self.input_names)}), got {len(inputs)}")
        env: dict[str, Any] = {}
        for name, value in zip(self.input_names, inputs, strict=True):
            self._produce(name, value, env)
        for node, attrs in self.nodes:
            if node.op_type == "Constant":
                out = torch.from_numpy(np.array(numpy_helper.to_array(attrs["value"])))
            else:
                args = [self._read(i, env) for i in node.input]
                try:
                    out = OPS[node.op_type](attrs, args)
                except NotImplementedError as exc:
                    raise SweeperError("model", f"quantization-aware training does not support node {node.name!r}: "
                                                f"{exc}") from None
            self._produce(node.output[0], out, env)
        outs = tuple(env[o] for o in self.output_names)
        return outs[0] if len(outs) == 1 else outs

    def to_onnx(self) -> onnx.ModelProto:
        """The ONNX model with the trained parameters written back into their initializers (same names)."""
        out = onnx.ModelProto()
        out.CopyFrom(self.model)
        for t in out.graph.initializer:
            if t.name in self._param_index:
                arr = self.params[self._param_index[t.name]].detach().cpu().numpy().astype(np.float32)
                t.CopyFrom(numpy_helper.from_array(arr, t.name))
        return out


__all__ = ["OPS", "OnnxModule", "unsupported_ops"]
