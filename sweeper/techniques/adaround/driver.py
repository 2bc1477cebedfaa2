"""The AdaRound driver: layers in graph order, each from its quantized input (earlier layers already
AdaRounded) to learned integers kept only when they reconstruct better than nearest; the per-layer record."""

from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sweeper.model.graph import ModelGraph
from sweeper.quant.precision import Precision
from sweeper.techniques.activation_sampler import ActivationSampler, ActivationStore
from sweeper.techniques.adaround.layers import Layer, find_layers
from sweeper.techniques.adaround.optimize import (
    AdaRoundConfig,
    GridQuantizer,
    optimize_rounding,
    reconstruction_error,
)
from sweeper.techniques.adaround.torch_layer import channel_axis, layer_forward


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


def working_table(table: Any, bits: int) -> Any:
    """A shallow copy of ``table`` (same encodings) whose rounding AdaRound changes, without the learned
    integers the table already had at ``bits`` (AdaRound starts from rounding to nearest)."""
    work = copy.copy(table)
    work.rounding = {k: v for k, v in table.rounding.items() if k[1] != bits}
    return work


def adaround_layer(graph: ModelGraph, work: Any, layer: Layer, prec: Precision, sampler: ActivationSampler,
                   rng: np.random.Generator, cfg: AdaRoundConfig) -> LayerResult:
    """Collect the layer's quantized input (earlier layers as ``work`` rounds them now), learn its rounding,
    and set it in ``work`` unless nearest reconstructs better. The layer's FP32 target must be in the
    sampler's store (under its output's name); both are dropped afterwards."""
    t0 = time.perf_counter()
    sampler.quantized_input(work, layer.input, prec, key="input")
    samples = sampler.samples("input", layer.output, cfg.batch_size, rng)
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
    sampler.drop("input", layer.output)
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
    rng = np.random.default_rng(cfg.seed)
    results: list[LayerResult] = []
    with tempfile.TemporaryDirectory(prefix="adaround-", dir=workdir) as tmp, _TorchThreads(threads):
        sampler = ActivationSampler(graph, data, ActivationStore(Path(tmp), cfg.memory_mb), batch_size=batch_size,
                                    max_samples=max_samples, threads=threads)
        sampler.fp32_outputs(work, list(dict.fromkeys(layer.output for layer in layers)))
        bar = _layer_bar(len(layers))
        try:
            for layer in layers:
                results.append(adaround_layer(graph, work, layer, prec, sampler, rng, cfg))
                bar.update(1)
        finally:
            bar.close()
    bits = prec.weight_bits
    rounding = {k: v for k, v in work.rounding.items() if k[1] == bits}
    return AdaRoundResult(prec.name, rounding, results, skipped, time.perf_counter() - t0)


__all__ = ["AdaRoundResult", "LayerResult", "adaround", "adaround_layer", "working_table"]
