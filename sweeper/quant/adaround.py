"""AdaRound: learned rounding of the weights of Conv, ConvTranspose, Gemm and MatMul, layer by layer.

Rounding to nearest minimises each weight's own error, not the layer's output error. AdaRound (Nagel et al.,
2020; AIMET's ``apply_adaround``) learns for every weight whether to round down or up: the weight on its grid
is ``(clamp(floor(w / s) + zp + h(V), qmin, qmax) - zp) * s`` with the rectified sigmoid
``h(V) = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)`` (zeta 1.1, gamma -0.1), ``V`` initialised so that
``h`` is the fractional part of ``w / s`` (the soft weight starts as the float weight; hard rounding of the
initial ``V`` is rounding to nearest). Per layer, Adam minimises

    reconstruction + reg * sum(1 - |2 h(V) - 1| ** beta)

on batches of the calibration data, the regulariser off during a warm start (20 % of the iterations) and
``beta`` annealed from 20 to 2 by a cosine after it (AIMET's schedule). The reconstruction error is AIMET's:
the squared L2 norm over the channel axis, averaged over samples and positions, between the layer's output
(with its fused activation, a Relu/Clip/... that alone reads it) computed from the *quantized* model's input
and with the learned weights, and the FP32 model's output. Layers go in graph order, and each layer's input
comes from the simulation with the earlier layers already AdaRounded and activations quantized at the
precision (:class:`~sweeper.sim.quantsim.QuantSim`, rebuilt per layer since it holds weights as constants).

The result is one integer array per weight on its encoding's grid (encodings unchanged), which
:meth:`~sweeper.sim.encodings.EncodingTable.set_rounding` gives to the simulation and the exporter. A layer
whose learned rounding reconstructs worse than rounding to nearest over the calibration data keeps nearest.

Cached activations (FP32 targets of every layer, the current layer's quantized input) stay in memory up to a
budget and are written to ``.npy`` files and read back memory-mapped past it. PyTorch is imported only inside
the functions that optimise (the rest of sweeper imports without it).
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from sweeper.errors import SweeperError
from sweeper.model.graph import ModelGraph
from sweeper.quant.encoding import Encoding
from sweeper.quant.precision import Precision
from sweeper.quant.profile import Profile

ZETA, GAMMA = 1.1, -0.1
LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# activations reconstructed with the layer when they alone read its output (AIMET's module/activation pairs)
FUSED_ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish")


@dataclass(frozen=True)
class AdaRoundConfig:
    """AdaRound's hyper-parameters (AIMET's defaults) and the activation cache's memory budget."""

    iterations: int = 1000
    batch_size: int = 32
    reg: float = 0.01
    beta: tuple[float, float] = (20.0, 2.0)
    warm_start: float = 0.2
    lr: float = 1e-3
    memory_mb: float = 1024.0  # cached activations held in memory; the rest streams from disk
    seed: int = 0


@dataclass
class LayerResult:
    """One optimised layer: reconstruction error over the calibration data with nearest and learned rounding,
    which was kept, how many integers differ from nearest, and the loss at the start and the end."""

    weight: str
    op: str
    op_type: str
    activation: str | None
    mse_nearest: float
    mse_adaround: float
    kept: str  # "adaround" | "nearest"
    changed: int
    loss_first: float
    loss_last: float
    seconds: float


@dataclass
class AdaRoundResult:
    """Learned integers per (weight, bits) of the layers that kept them, and the per-layer record."""

    precision: str
    rounding: dict[tuple[str, int], np.ndarray]
    layers: list[LayerResult] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"precision": self.precision, "seconds": round(self.seconds, 3),
                "layers": [asdict(r) for r in self.layers], "skipped": self.skipped}


# -- which layers ---------------------------------------------------------------------------------------
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


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _unsupported(graph: ModelGraph, node: onnx.NodeProto) -> str | None:
    """Why this op cannot be reconstructed here (None: it can)."""
    a = _attrs(node)
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


# -- the quantizer on the weight's grid -----------------------------------------------------------------
class GridQuantizer:
    """Weight ``w`` on the grid of ``enc``: ``floor(w / s) + zp`` plus a learned 0 or 1, saturated to the grid."""

    def __init__(self, w: np.ndarray, enc: Encoding) -> None:
        w = np.asarray(w, np.float32)
        scale, zp = enc._broadcast(w)  # noqa: SLF001 - the encoding's own broadcast along its axis
        ratio = w / scale  # float32, as QuantizeLinear and Encoding.quantize divide
        floor = np.floor(ratio)
        self.frac = (ratio - floor).astype(np.float32)
        self.base = (floor + zp).astype(np.float32)
        self.scale = np.broadcast_to(scale, w.shape).astype(np.float32) if scale.ndim else scale.astype(np.float32)
        self.zp = zp.astype(np.float32)
        self.qmin, self.qmax = float(enc.qmin), float(enc.qmax)

    def initial_v(self) -> np.ndarray:
        """``V`` with ``h(V)`` = the fractional part of ``w / s`` (so hard rounding starts at nearest)."""
        return (-np.log((ZETA - GAMMA) / (self.frac.astype(np.float64) - GAMMA) - 1.0)).astype(np.float32)

    def hard(self, v: np.ndarray) -> np.ndarray:
        """The integers: round up where ``V >= 0`` (``h >= 0.5``), down elsewhere."""
        return np.clip(self.base + (v >= 0), self.qmin, self.qmax).astype(np.int64)

    def nearest(self) -> np.ndarray:
        """Hard rounding of the initial ``V``: rounding to nearest (ties up rather than to even)."""
        return self.hard(self.initial_v())

    def soft_parts(self) -> tuple[np.ndarray, np.ndarray]:
        """``(w0, g)`` with the soft weight ``w = w0 + h * g`` for offsets ``h`` in [0, 1]: exactly
        ``(clamp(floor(w / s) + zp + h, qmin, qmax) - zp) * s``, since ``g = s`` where ``floor + zp`` is in
        [qmin, qmax - 1] and 0 (saturated: constant) elsewhere."""
        inside = (self.base >= self.qmin) & (self.base <= self.qmax - 1)
        w0 = (np.clip(self.base, self.qmin, self.qmax) - self.zp) * self.scale
        return w0.astype(np.float32), np.where(inside, self.scale, 0.0).astype(np.float32)

    def soft_weight(self, h: np.ndarray) -> np.ndarray:
        """The float weight for offsets ``h`` in [0, 1]."""
        w0, g = self.soft_parts()
        return w0 + h * g


def rectified_sigmoid(v: Any) -> Any:
    """``h(V) = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)``: reaches 0 and 1 exactly (unlike a sigmoid)."""
    import torch

    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def beta_at(it: int, cfg: AdaRoundConfig) -> float:
    """AIMET's cosine annealing of ``beta`` from ``beta[0]`` at the end of the warm start to ``beta[1]``."""
    start, end = cfg.beta
    warm = cfg.warm_start * cfg.iterations
    rel = (it - warm) / max(cfg.iterations - warm, 1e-9)
    return end + 0.5 * (start - end) * (1.0 + math.cos(rel * math.pi))


# -- the layer in PyTorch -------------------------------------------------------------------------------
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

    a = _attrs(node)
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
    a = _attrs(node)
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

    a, t = _attrs(node), node.op_type
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


def recon_loss(out: Any, target: Any, axis: int) -> Any:
    """AIMET's reconstruction error: squared L2 norm over the channel axis, mean over the rest."""
    import torch.nn.functional as F  # noqa: N812

    return F.mse_loss(out, target, reduction="sum") * (out.shape[axis] / max(out.numel(), 1))


# -- cached activations ---------------------------------------------------------------------------------
class ActivationStore:
    """Arrays of tensors over the calibration runs, by key: held in memory up to ``budget_mb`` in all, written
    to ``.npy`` files in ``folder`` past it and read back memory-mapped."""

    def __init__(self, folder: Path, budget_mb: float) -> None:
        self.folder = folder
        self.budget = budget_mb * 2**20
        self.in_memory = 0
        self.on_disk = 0
        self._chunks: dict[str, list[np.ndarray]] = {}
        self._files = 0

    def add(self, key: str, array: np.ndarray) -> None:
        """Append one run's array to ``key`` (on disk once the budget is used up)."""
        a = np.ascontiguousarray(array, np.float32)
        if self.in_memory + a.nbytes > self.budget:
            path = self.folder / f"{self._files}.npy"
            self._files += 1
            np.save(path, a)
            self.on_disk += a.nbytes
            a = np.load(path, mmap_mode="r")
        else:
            self.in_memory += a.nbytes
        self._chunks.setdefault(key, []).append(a)

    def chunks(self, key: str) -> list[np.ndarray]:
        return self._chunks.get(key, [])

    def drop(self, key: str) -> None:
        """Forget ``key`` (its files are removed, its memory returns to the budget)."""
        for a in self._chunks.pop(key, []):
            if isinstance(a, np.memmap):
                name = a.filename
                self.on_disk -= a.nbytes
                del a
                Path(name).unlink(missing_ok=True)
            else:
                self.in_memory -= a.nbytes


class Samples:
    """A layer's quantized inputs and FP32 targets, aligned run by run, drawn as random batches of samples.

    Runs whose shapes agree (batched data) are one pool of samples: in memory they are joined into one torch
    tensor; memory-mapped, a batch gathers its rows from the files. Runs of different shapes (feeds) are
    drawn whole, one per iteration."""

    def __init__(self, xs: list[np.ndarray], ys: list[np.ndarray], batch: int, rng: np.random.Generator) -> None:
        import torch

        self.xs, self.ys, self.batch, self.rng = xs, ys, batch, rng
        self.uniform = len({x.shape[1:] for x in xs}) == 1 and len({y.shape[1:] for y in ys}) == 1
        self.offsets = np.cumsum([0] + [len(x) for x in xs])
        self.n = int(self.offsets[-1])
        self.joined = None
        if self.uniform and not any(isinstance(c, np.memmap) for c in xs + ys):
            self.joined = (torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)))

    def draw(self) -> tuple[Any, Any]:
        """A random batch of (inputs, targets) without repeats (a whole run when runs differ in shape)."""
        import torch

        if not self.uniform:
            k = int(self.rng.integers(len(self.xs)))
            return _tensor(self.xs[k]), _tensor(self.ys[k])
        idx = np.sort(self.rng.choice(self.n, size=min(self.batch, self.n), replace=False))
        if self.joined is not None:
            t = torch.from_numpy(idx)
            return self.joined[0][t], self.joined[1][t]
        which = np.searchsorted(self.offsets, idx, side="right") - 1
        parts = [(self.xs[c][idx[which == c] - self.offsets[c]], self.ys[c][idx[which == c] - self.offsets[c]])
                 for c in np.unique(which)]
        return (torch.from_numpy(np.concatenate([p[0] for p in parts])),
                torch.from_numpy(np.concatenate([p[1] for p in parts])))

    def runs(self) -> Iterator[tuple[Any, Any]]:
        """Every run's (inputs, targets), for the error over all the calibration data."""
        for x, y in zip(self.xs, self.ys, strict=True):
            yield _tensor(x), _tensor(y)


def _tensor(a: np.ndarray) -> Any:
    """A torch tensor of ``a`` (copied when read-only, e.g. memory-mapped: torch wants writable memory)."""
    import torch

    return torch.from_numpy(a if a.flags.writeable else np.array(a))


# -- collecting the activations -------------------------------------------------------------------------
def _feeds(data: Any, input_names: list[str], batch_size: int, max_samples: int | None
           ) -> Iterator[dict[str, np.ndarray]]:
    """Model runs over the calibration data, at most ``max_samples`` samples (batched) or feeds."""
    seen = 0
    for _, feeds in data.batches(input_names, batch_size):
        if max_samples is not None and seen >= max_samples:
            return
        if data.arrays is not None:
            if max_samples is not None:
                feeds = {k: v[: max_samples - seen] if np.ndim(v) else v for k, v in feeds.items()}
            seen += len(next((v for v in feeds.values() if np.ndim(v)), [0]))
        else:
            seen += 1
        yield feeds


def _runner(graph: ModelGraph, table: Any, prec: Precision, wanted: list[str], threads: int
            ) -> Callable[[dict[str, np.ndarray]], list[np.ndarray]]:
    """A function computing ``wanted`` from feeds: the FP32 model with them as outputs, or the simulation at
    uniform ``prec`` (whose fused layers hide their inner tensors, so FP32 values come from the model)."""
    from sweeper.model.session import ort_session

    if prec.is_float and not prec.is_fp16:
        model = onnx.ModelProto()
        model.CopyFrom(graph.model)
        known = {o.name for o in model.graph.output}
        model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in wanted if t not in known)
        sess = ort_session(model, threads)
        return lambda feeds: sess.run(wanted, feeds)
    from sweeper.sim.quantsim import QuantSim

    sim = QuantSim(graph, table, threads=threads, precisions=[prec], extra_outputs=wanted)
    sim.apply(Profile.uniform([g.name for g in graph.groups], prec))
    return lambda feeds: sim.session.run(wanted, {**sim.bound, **feeds})


def simulated(graph: ModelGraph, table: Any, prec: Precision, names: list[str], data: Any, batch_size: int,
              max_samples: int | None, threads: int) -> Iterator[dict[str, np.ndarray]]:
    """``names`` per calibration run, at uniform ``prec``: raw values, before the fake-quant a tensor gets
    (model inputs as fed). The simulation is built from ``table`` now: its rounding at this moment."""
    inputs = set(graph.input_names)
    wanted = [n for n in names if n not in inputs]
    run = _runner(graph, table, prec, wanted, threads) if wanted else None
    for feeds in _feeds(data, graph.input_names, batch_size, max_samples):
        out = {n: feeds[n] for n in names if n in inputs}
        if run is not None:
            out.update(zip(wanted, run(feeds), strict=True))
        yield out


def input_encoding(graph: ModelGraph, table: Any, tensor: str, prec: Precision) -> Encoding | None:
    """The fake-quant the simulation applies to ``tensor`` before its readers see it (None: none)."""
    at = {graph.sim_location[t]: t for t in graph.activations}
    act = at.get(tensor)
    return None if act is None else table.act_encoding(act, prec)


def working_table(table: Any, bits: int) -> Any:
    """A shallow copy of ``table`` (same encodings) whose rounding AdaRound changes, without the learned
    integers the table already had at ``bits`` (AdaRound starts from rounding to nearest)."""
    work = copy.copy(table)
    work.rounding = {k: v for k, v in table.rounding.items() if k[1] != bits}
    return work


# -- optimising one layer -------------------------------------------------------------------------------
class _Adam:
    """Adam on one tensor as ``torch.optim.Adam`` updates it (betas 0.9, 0.999; eps 1e-8): its fused CPU kernel
    (one pass instead of eight), without importing ``torch.optim`` (which imports TorchDynamo: seconds of
    start-up for a few lines of arithmetic)."""

    def __init__(self, param: Any, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        import torch

        self.p, self.lr, self.betas, self.eps = param, lr, betas, eps
        self.m, self.v = torch.zeros_like(param), torch.zeros_like(param)
        self.t = torch.zeros((), dtype=torch.float32)
        self.fused = getattr(torch, "_fused_adam_", None)

    def step(self, grad: Any) -> None:
        """One update of the parameter with ``grad``."""
        b1, b2 = self.betas
        self.t += 1
        if self.fused is not None:
            self.fused([self.p], [grad], [self.m], [self.v], [], [self.t], amsgrad=False, lr=self.lr, beta1=b1,
                       beta2=b2, weight_decay=0.0, eps=self.eps, maximize=False)
            return
        t = float(self.t)
        self.m.mul_(b1).add_(grad, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (self.v.sqrt() / math.sqrt(1 - b2**t)).add_(self.eps)
        self.p.addcdiv_(self.m, denom, value=-self.lr / (1 - b1**t))


def soft_rounding(v: Any, w0: Any, gscale: Any) -> tuple[Any, Any, Any, Any]:
    """``(w, sig, h_raw, h)``: the soft weight for ``V`` and the intermediates its gradient needs."""
    import torch

    sig = torch.sigmoid(v)
    h_raw = sig.mul(ZETA - GAMMA).add_(GAMMA)
    h = h_raw.clamp(0.0, 1.0)
    return torch.addcmul(w0, h, gscale), sig, h_raw, h


def grad_v(gw: Any, gscale: Any, sig: Any, h_raw: Any, h: Any, beta: float | None, reg: float) -> Any:
    """d(loss)/dV from d(reconstruction)/dw (``gw``, overwritten), with the regulariser when ``beta`` is set:
    the chain rule through the grid (``gscale``), the rectified sigmoid and ``reg * (1 - |2h - 1| ** beta)``,
    as autograd computes it (clamps pass the gradient on their closed range)."""
    gh = gw.mul_(gscale)
    if beta is not None:
        u = h.mul(2.0).sub_(1.0)
        mag = u.abs().log_().mul_(beta - 1.0).exp_()  # |u| ** (beta - 1): pow is 5x slower on CPU
        gh.sub_(mag.mul_(u.sign_()), alpha=2.0 * reg * beta)
    return gh.mul_(sig.mul(1.0 - sig).mul_((ZETA - GAMMA) * (h_raw == h)))


def optimize_rounding(forward: Callable[[Any, Any], Any], gq: GridQuantizer, samples: Samples, axis: int,
                      cfg: AdaRoundConfig) -> tuple[np.ndarray, float, float]:
    """Learn ``V`` for one layer (see the module docstring); returns ``V`` and the reconstruction loss of
    the first and the last iteration.

    Autograd runs through the layer only (the gradient of the reconstruction error with respect to the soft
    weight); the rest of the chain rule is written out (:func:`grad_v`): the same gradient in a third of the
    passes over the weights, which dominate the iteration of a layer with many weights and few outputs."""
    import torch

    w0, gscale = (torch.from_numpy(a) for a in gq.soft_parts())
    v = torch.from_numpy(gq.initial_v())
    adam = _Adam(v, cfg.lr)
    warm = cfg.warm_start * cfg.iterations
    first = last = float("nan")
    for it in range(cfg.iterations):
        x, y = samples.draw()
        with torch.no_grad():
            w, sig, h_raw, h = soft_rounding(v, w0, gscale)
        w.requires_grad_(True)
        recon = recon_loss(forward(x, w), y, axis)
        (gw,) = torch.autograd.grad(recon, [w])
        with torch.no_grad():
            adam.step(grad_v(gw, gscale, sig, h_raw, h, beta_at(it, cfg) if it >= warm else None, cfg.reg))
        last = float(recon.detach())
        if it == 0:
            first = last
    return v.numpy(), first, last


def round_loss(v: Any, beta: float, reg: float) -> Any:
    """The regulariser ``reg * sum(1 - |2 h(V) - 1| ** beta)`` (pushes every ``h`` to 0 or 1)."""
    return reg * (1.0 - (2.0 * rectified_sigmoid(v) - 1.0).abs().pow(beta)).sum()


def reconstruction_error(forward: Callable[[Any, Any], Any], w: np.ndarray, samples: Samples, axis: int) -> float:
    """The reconstruction error of weight ``w`` over all the calibration data."""
    import torch

    wt = torch.from_numpy(np.ascontiguousarray(w, np.float32))
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in samples.runs():
            err = (forward(x, wt) - y).pow(2).sum(axis)
            total += float(err.sum())
            count += err.numel()
    return total / max(count, 1)


def adaround_layer(graph: ModelGraph, work: Any, layer: Layer, prec: Precision, store: ActivationStore,
                   run: dict[str, Any], cfg: AdaRoundConfig) -> LayerResult:
    """Collect the layer's quantized input (earlier layers as ``work`` rounds them now), learn its rounding,
    and set it in ``work`` unless nearest reconstructs better."""
    t0 = time.perf_counter()
    enc_in = input_encoding(graph, work, layer.input, prec)
    for outs in simulated(graph, work, prec, [layer.input], run["data"], run["batch_size"], run["max_samples"],
                          run["threads"]):
        x = outs[layer.input].astype(np.float32)
        store.add("input", x if enc_in is None else enc_in.fake_quantize(x))
    samples = Samples(store.chunks("input"), store.chunks(layer.output), cfg.batch_size, run["rng"])
    w = graph.weight_array(layer.weight).astype(np.float32)
    enc = work.weight(layer.weight, prec.weight_bits)
    gq = GridQuantizer(w, enc)
    forward, axis = layer_forward(graph, work, layer, prec), channel_axis(layer)
    v, first, last = optimize_rounding(forward, gq, samples, axis, cfg)
    learned, nearest = gq.hard(v), enc.quantize(w)
    mse_near = reconstruction_error(forward, enc.dequantize(nearest), samples, axis)
    mse_ada = reconstruction_error(forward, enc.dequantize(learned), samples, axis)
    kept = "adaround" if mse_ada <= mse_near else "nearest"
    if kept == "adaround":
        work.set_rounding(layer.weight, prec.weight_bits, learned)
    store.drop("input")
    store.drop(layer.output)
    return LayerResult(layer.weight, layer.node.name, layer.node.op_type, layer.activation, mse_near, mse_ada, kept,
                       int(np.count_nonzero(learned != nearest)), first, last, time.perf_counter() - t0)


class _TorchThreads:
    """PyTorch on ``threads`` intra-op threads inside the block (0: leave as is)."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def __enter__(self) -> None:
        import torch

        self.before = torch.get_num_threads()
        if self.threads > 0:
            torch.set_num_threads(self.threads)

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.set_num_threads(self.before)


def _layer_bar(total: int) -> Any:
    """Progress over layers: tqdm on a terminal, silent otherwise (as sweeper.search.evaluate.progress)."""
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc="adaround", unit="layer", disable=not sys.stderr.isatty(), leave=False)


def adaround(graph: ModelGraph, table: Any, prec: Precision, data: Any, cfg: AdaRoundConfig | None = None, *,
             threads: int = 1, batch_size: int = 64, max_samples: int | None = None,
             workdir: str | Path | None = None) -> AdaRoundResult:
    """AdaRound every supported layer of ``graph`` at the weight bit width of the uniform precision ``prec``
    (activations quantized at it), from the calibration ``data`` (a :class:`~sweeper.eval.data.Dataset`, run
    ``batch_size`` samples at a time). ``table`` is not changed: the result's ``rounding`` is what
    :meth:`~sweeper.sim.encodings.EncodingTable.set_rounding` takes. Temporary files go under ``workdir``."""
    cfg = cfg or AdaRoundConfig()
    if prec.is_float or prec.weights_float:
        raise ValueError(f"AdaRound needs integer weights: {prec.name} has float weights")
    t0 = time.perf_counter()
    layers, skipped = find_layers(graph)
    work = working_table(table, prec.weight_bits)
    run = {"data": data, "batch_size": batch_size, "max_samples": max_samples, "threads": threads,
           "rng": np.random.default_rng(cfg.seed)}
    results: list[LayerResult] = []
    with tempfile.TemporaryDirectory(prefix="adaround-", dir=workdir) as tmp, _TorchThreads(threads):
        store = ActivationStore(Path(tmp), cfg.memory_mb)
        from sweeper.quant.precision import FP32

        targets = list(dict.fromkeys(layer.output for layer in layers))
        for outs in simulated(graph, work, FP32, targets, data, batch_size, max_samples, threads):
            for t in targets:
                store.add(t, outs[t])
        bar = _layer_bar(len(layers))
        try:
            for layer in layers:
                results.append(adaround_layer(graph, work, layer, prec, store, run, cfg))
                bar.update(1)
        finally:
            bar.close()
    bits = prec.weight_bits
    rounding = {k: v for k, v in work.rounding.items() if k[1] == bits}
    return AdaRoundResult(prec.name, rounding, results, skipped, time.perf_counter() - t0)


# -- the result on disk ---------------------------------------------------------------------------------
ROUNDING_FILE = "rounding.npz"


def save_rounding(path: Path, rounding: dict[tuple[str, int], np.ndarray], kept: str, precision: str) -> None:
    """The learned integers per (weight, bits), with which rounding the step kept and at what precision."""
    keys = sorted(rounding)
    arrays = {f"q{i}": rounding[k] for i, k in enumerate(keys)}
    np.savez_compressed(path, names=np.array([k[0] for k in keys], dtype=str),
                        bits=np.array([k[1] for k in keys], np.int64), kept=np.array(kept),
                        precision=np.array(precision), **arrays)


def load_rounding(path: str | Path, learned: bool = False, graph: ModelGraph | None = None
                  ) -> dict[tuple[str, int], np.ndarray]:
    """The integers to store the weights as after an AdaRound step: ``path`` is its folder or its
    ``rounding.npz``. Empty when the step kept rounding to nearest (nothing to set), unless ``learned``,
    which returns what AdaRound learned either way. With ``graph``, every weight must be one of its weights,
    of the same shape. Problems are :class:`~sweeper.errors.SweeperError` naming the file."""
    p = Path(path)
    if p.is_dir():
        p = p / ROUNDING_FILE
    if not p.is_file():
        raise SweeperError(str(path), f"no AdaRound rounding here: expected {ROUNDING_FILE} or the adaround folder "
                                      "that holds it (written by `sweeper adaround`)")
    try:
        with np.load(p, allow_pickle=False) as z:
            names, bits, kept = list(z["names"]), list(z["bits"]), str(z["kept"])
            out = {(str(n), int(b)): z[f"q{i}"].astype(np.int64) for i, (n, b) in enumerate(zip(names, bits, strict=True))}
    except (KeyError, ValueError, OSError) as exc:
        raise SweeperError(str(p), f"not an AdaRound rounding file ({exc})") from None
    for (name, _), q in out.items() if graph is not None else ():
        if name not in graph.weight_quantizers or graph.weight_array(name).shape != q.shape:
            raise SweeperError(str(p), f"weight {name!r} {q.shape} is not a weight of this model (AdaRound ran on "
                                       "another model or preparation): run `sweeper adaround` on this one")
    return out if learned or kept == "adaround" else {}


__all__ = ["ROUNDING_FILE", "ActivationStore", "AdaRoundConfig", "AdaRoundResult", "GridQuantizer", "Layer", "LayerResult",
           "adaround", "find_layers", "layer_forward", "load_rounding", "optimize_rounding", "reconstruction_error",
           "save_rounding"]
