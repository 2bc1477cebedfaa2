"""Quantization-aware training (Step 5): learned scales and offsets, trained weights, exact reload.

Design. QAT trains the *prepared ONNX graph* itself, run as a torch module by :mod:`sweeper.techniques.torchsim`
(BatchNorm already folded, tensor names identical to the QuantSim's), rather than the user's torch module:

* every quantizer the :class:`~sweeper.sim.quantsim.QuantSim` applies under the chosen profile gets a torch
  counterpart at the same tensor, initialized from the same :class:`~sweeper.sim.encodings.EncodingTable`
  encoding: activations (model inputs and op outputs, per tensor), weights (per channel along the encoding's
  axis), int32 biases (input scale x weight scale, as ``EncodingTable.bias_scale``) and float16 round trips.
  Each group keeps its own precision, so a mixed profile from AMP or an AIMET encodings file trains as it
  is (AIMET cannot carry an ONNX mixed-precision result into QAT: qualcomm/aimet#4051), and float groups
  stay float;
* fake-quantization is ``(clamp(round(x / s) + z, qmin, qmax) - z) * s`` with a straight-through estimator
  for both roundings (LSQ): the gradient reaches the scale ``s`` and, for asymmetric encodings, the
  zero point ``z``; symmetric encodings keep their fixed zero point;
* after training the parameters are written back into the same ONNX initializers and the learned scales
  and zero points become :class:`~sweeper.quant.encoding.Encoding` objects of the same quantizers, so
  loading the result into a new QuantSim reproduces the trained model's quantization by construction.

Only the prepared graph's weights and biases train (Conv/ConvTranspose/Gemm/MatMul weights, their
biases, and the constant of an Add after a MatMul); other constants stay as they are. A learned AdaRound
rounding is not carried into QAT: the trained weights are rounded to nearest.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch

from sweeper.errors import SweeperError
from sweeper.eval.data import LABELS, Dataset
from sweeper.model.graph import ModelGraph
from sweeper.quant.encoding import Encoding
from sweeper.quant.fp16 import FP16_MAX
from sweeper.quant.profile import Profile
from sweeper.sim.encodings import EncodingTable
from sweeper.techniques.torchsim import OnnxModule

INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class QATSettings:
    """How the default training runs (a user training function receives them too)."""

    epochs: int = 4
    lr: float = 1e-4
    batch_size: int = 64
    seed: int = 0


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even (QuantizeLinear's rounding) forward, identity backward."""
    return x + (torch.round(x) - x).detach()


class FakeQuant(torch.nn.Module):
    """An integer quantizer with a learned scale (and zero point, when asymmetric), started from ``enc``.

    The scale is learned in log space, ``scale = initial scale x exp(log_gain)``: a step changes it by a
    fraction, whatever its size (a 16-bit activation's scale is 256 times an 8-bit one's), it stays positive,
    and at the start it is the initial scale exactly (so the untrained model equals the QuantSim)."""

    def __init__(self, enc: Encoding, ndim: int | None = None) -> None:
        super().__init__()
        self.bits, self.symmetric, self.axis = enc.bitwidth, enc.symmetric, enc.axis
        self.qmin, self.qmax = enc.qmin, enc.qmax
        self.ndim = ndim
        self.register_buffer("initial_scale", torch.tensor(np.asarray(enc.scale, np.float32).ravel()))
        self.log_gain = torch.nn.Parameter(torch.zeros_like(self.initial_scale))
        zp = torch.tensor(np.asarray(enc.zero_point, np.float32).ravel().copy())
        self.zero_point = torch.nn.Parameter(zp, requires_grad=not enc.symmetric)

    def _shaped(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.axis is None or x.dim() == 0:
            return v.reshape(())
        shape = [1] * x.dim()
        shape[self.axis] = -1
        return v.reshape(shape)

    def effective_scale(self) -> torch.Tensor:
        return self.initial_scale * torch.exp(self.log_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self._shaped(self.effective_scale(), x)
        z = self._shaped(torch.clamp(round_ste(self.zero_point), self.qmin, self.qmax), x)
        q = torch.clamp(round_ste(x / s) + z, self.qmin, self.qmax)
        return (q - z) * s

    def encoding(self) -> Encoding:
        """The learned encoding (AIMET convention: ``offset = -zero point`` on the unsigned grid)."""
        scale = self.effective_scale().detach().cpu().numpy().astype(np.float32)
        zp = np.clip(np.rint(self.zero_point.detach().cpu().numpy()), self.qmin, self.qmax).astype(np.int64)
        offset = -(zp + (1 << (self.bits - 1))) if self.symmetric else -zp
        return Encoding(bitwidth=self.bits, dtype="int", symmetric=self.symmetric, scale=scale,
                        offset=offset.astype(np.int64), axis=self.axis)


class Float16Quant(torch.nn.Module):
    """The float16 round trip (saturating at +-65504, as :mod:`sweeper.quant.fp16`), identity backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sat = torch.clamp(x, -FP16_MAX, FP16_MAX)
        return sat + (sat.half().float() - sat).detach()


class BiasQuant(torch.nn.Module):
    """An int32 bias at (input scale x weight scale), which follows both learned scales."""

    def __init__(self, act: FakeQuant, weight: FakeQuant) -> None:
        super().__init__()
        self._pair = (act, weight)  # a tuple: not registered twice as submodules

    def forward(self, b: torch.Tensor) -> torch.Tensor:
        act, weight = self._pair
        scale = act.effective_scale().reshape(()) * weight.effective_scale().reshape(-1)
        return torch.clamp(round_ste(b / scale), -INT32_MAX - 1, INT32_MAX) * scale


def trainable_tensors(graph: ModelGraph) -> set[str]:
    """The initializers QAT trains: weights of the weight ops, their biases, an Add's constant after a MatMul."""
    out = set(graph.weight_quantizers) | set(graph.bias_quantizers)
    for n in graph.nodes:
        if n.op_type in ("Conv", "ConvTranspose", "Gemm") and len(n.input) > 2 and n.input[2] in graph.initializers:
            out.add(n.input[2])
        if n.op_type == "Add" and any((p := graph.producer.get(i)) is not None and p.op_type == "MatMul"
                                      for i in n.input):
            out.update(i for i in n.input if i in graph.initializers)
    return out


class QATModel(torch.nn.Module):
    """The prepared graph with the fake-quantizers of ``profile`` (see the module docstring).

    ``model(*inputs)`` takes the graph inputs in order (``input_names``) and returns the first output
    alone when there is one, else a tuple."""

    def __init__(self, graph: ModelGraph, table: EncodingTable, profile: Profile) -> None:
        super().__init__()
        self.graph, self.profile = graph, profile
        self.net = OnnxModule(graph.model, trainable_tensors(graph))
        self.input_names, self.output_names = self.net.input_names, self.net.output_names
        self.act_names: list[str] = []
        self.weight_names: list[str] = []
        self.act_q = torch.nn.ModuleList()
        self.weight_q = torch.nn.ModuleList()
        self.bias_q = torch.nn.ModuleList()
        group_of = table.group_of
        for t in graph.activations:
            self._add(t, table.act_encoding(t, profile[group_of[t]]), self.act_names, self.act_q,
                      self.net.act_hooks)
        for w in graph.weight_quantizers:
            self._add(w, table.weight_encoding(w, profile[group_of[w]]), self.weight_names, self.weight_q,
                      self.net.param_hooks)
        self._add_biases(table)

    @staticmethod
    def _add(name: str, enc: Encoding | None, names: list[str], modules: torch.nn.ModuleList,
             hooks: dict[str, Any]) -> None:
        if enc is None:
            return
        q: torch.nn.Module = Float16Quant() if enc.dtype == "float" else FakeQuant(enc)
        names.append(name)
        modules.append(q)
        hooks[name] = q

    def _add_biases(self, table: EncodingTable) -> None:
        """Int32 biases where the simulation has them; float16 biases in float16 groups."""
        g = self.graph
        act = dict(zip(self.act_names, self.act_q, strict=True))
        weight = dict(zip(self.weight_names, self.weight_q, strict=True))
        for b, bq in g.bias_quantizers.items():
            prec = self.profile[table.group_of[bq.weight]]
            q: torch.nn.Module | None = None
            if table.bias_scale(b, self.profile) is not None:
                ins = g.input_quantizers(g.node_by_name[bq.op])[0]
                q = BiasQuant(act[ins], weight[bq.weight])
            elif prec.is_fp16:
                q = Float16Quant()
            if q is not None:
                self.bias_q.append(q)
                self.net.param_hooks[b] = q

    def forward(self, *inputs: torch.Tensor) -> Any:
        return self.net(*inputs)

    def encodings(self) -> tuple[dict[str, Encoding], dict[str, Encoding]]:
        """The learned integer encodings: (activations by tensor, weights by initializer)."""
        acts = {n: q.encoding() for n, q in zip(self.act_names, self.act_q, strict=True) if isinstance(q, FakeQuant)}
        weights = {n: q.encoding() for n, q in zip(self.weight_names, self.weight_q, strict=True)
                   if isinstance(q, FakeQuant)}
        return acts, weights

    def trained_onnx(self) -> onnx.ModelProto:
        """The prepared graph with the trained float weights (the learned encodings quantize them)."""
        return self.net.to_onnx()


def learned_table(model: onnx.ModelProto, qat: QATModel, base: EncodingTable) -> tuple[ModelGraph, EncodingTable]:
    """The trained model's graph and an EncodingTable holding the learned encodings (the calibration
    statistics and settings of ``base`` stand behind any quantizer the profile does not use)."""
    graph = ModelGraph(model)
    table = EncodingTable(graph, base.stats, base.config)
    acts, weights = qat.encodings()
    for t, enc in acts.items():
        table.set_activation(t, enc)
    for w, enc in weights.items():
        table.set_weight(w, enc)
    return graph, table


# -- training ---------------------------------------------------------------------------------------------
TrainFn = Callable[[QATModel, Any, QATSettings], Any]


def _first_output(out: Any, index: int) -> torch.Tensor:
    return out[index] if isinstance(out, tuple) else out


def default_train(model: QATModel, data: Dataset, settings: QATSettings, output_index: int = 0,
                  where: str = "qat.data") -> list[float]:
    """Cross-entropy on ``data`` (inputs by model input name plus ``labels``), Adam, shuffled mini-batches
    (feeds: one model run each); returns the mean loss of each epoch."""
    names = model.input_names
    missing = [k for k in [*names, LABELS] if (data.arrays is not None and k not in data.arrays)]
    if missing:
        raise SweeperError(where, f"the training data has no {', '.join(map(repr, missing))}: expected arrays for "
                                  f"every model input ({', '.join(names)}) and {LABELS!r}")
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=settings.lr)
    gen = np.random.default_rng(settings.seed)
    losses = []
    model.train()
    for _ in range(settings.epochs):
        total, count = 0.0, 0
        for feeds, labels in _batches(data, names, settings.batch_size, gen, where):
            out = _first_output(model(*[torch.from_numpy(np.ascontiguousarray(feeds[k])) for k in names]),
                                output_index)
            loss = torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]),
                                                     torch.from_numpy(labels.astype(np.int64)).reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, count = total + float(loss.detach()) * len(labels), count + len(labels)
        losses.append(total / max(count, 1))
    model.eval()
    return losses


def _batches(data: Dataset, names: list[str], batch_size: int, gen: np.random.Generator, where: str) -> Any:
    """Shuffled ``(feeds, labels)`` mini-batches of batched data, or the feeds in a shuffled order."""
    if data.arrays is not None:
        order = gen.permutation(data.samples)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            yield {k: data.arrays[k][idx] for k in names}, np.asarray(data.arrays[LABELS])[idx]
        return
    feeds = data.feeds or []
    for i in gen.permutation(len(feeds)):
        if LABELS not in feeds[i]:
            raise SweeperError(where, f"feed {i} has no {LABELS!r}: expected labels for the cross-entropy")
        yield {k: np.asarray(feeds[i][k]) for k in names}, np.asarray(feeds[i][LABELS])


def train(model: QATModel, data: Any, dataset: Dataset | None, settings: QATSettings, fn: TrainFn | None = None,
          output_index: int = 0, threads: int = 1) -> dict[str, Any]:
    """Train ``model`` in place with ``fn(model, data, settings)`` (data as the loader returned it) or
    :func:`default_train`; returns seconds and, for the default, the loss per epoch."""
    if fn is None and dataset is None:
        raise SweeperError("qat.data", "the default training needs a dict of arrays or a list of feed dicts")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(settings.seed)
    t0 = time.perf_counter()
    try:
        if fn is None:
            assert dataset is not None
            losses: list[float] | None = default_train(model, dataset, settings, output_index)
        else:
            try:
                fn(model, data, settings)
            except SweeperError:
                raise
            except Exception as exc:  # noqa: BLE001 - the user's training function
                raise SweeperError("qat.train", f"the training function failed: {type(exc).__name__}: {exc}") from None
            losses = None
    finally:
        torch.set_num_threads(before)
    model.eval()
    if losses is not None and not all(math.isfinite(v) for v in losses):
        raise SweeperError("qat.lr", f"the training loss diverged ({losses}): expected a smaller learning rate")
    return {"seconds": time.perf_counter() - t0, "losses": losses}


def run_torch(model: torch.nn.Module, input_names: list[str]) -> Callable[[dict[str, np.ndarray]], list[np.ndarray]]:
    """``model`` as a ``run(feeds) -> outputs`` function (what evaluators call), without gradients."""

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            out = model(*[torch.from_numpy(np.ascontiguousarray(feeds[k])) for k in input_names])
        outs = out if isinstance(out, tuple) else (out,)
        return [o.detach().numpy() for o in outs]

    return run


__all__ = ["BiasQuant", "FakeQuant", "Float16Quant", "QATModel", "QATSettings", "default_train", "learned_table",
           "round_ste", "run_torch", "train", "trainable_tensors"]
