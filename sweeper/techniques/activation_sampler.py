"""A layer's quantized inputs and FP32 outputs over the calibration data, for layer-wise techniques.

Techniques that fit one layer at a time (AdaRound; to come: SeqMSE, AdaQuant) need, per layer, what the layer
sees in the quantized model (its input from the simulation, with the earlier layers as the technique has
already changed them, fake-quantized as the layer reads it) and what it should produce (its FP32 output).
:class:`ActivationSampler` collects both over the calibration data, runs the simulation
(:class:`~sweeper.sim.quantsim.QuantSim`) or the FP32 model to get them, and keeps them in an
:class:`ActivationStore` (in memory up to a budget, then memory-mapped ``.npy`` files); :class:`Samples` draws
aligned random batches from them. PyTorch is imported only where tensors are made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from sweeper.model.graph import ModelGraph
from sweeper.quant.encoding import Encoding
from sweeper.quant.precision import FP32, Precision
from sweeper.quant.profile import Profile


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



# -- the sampler ----------------------------------------------------------------------------------------
class ActivationSampler:
    """Collects a layer's inputs and targets over the calibration ``data`` (a :class:`~sweeper.eval.data.Dataset`,
    run ``batch_size`` samples at a time, at most ``max_samples``) into ``store``."""

    def __init__(self, graph: ModelGraph, data: Any, store: ActivationStore, *, batch_size: int = 64,
                 max_samples: int | None = None, threads: int = 1) -> None:
        self.graph, self.data, self.store = graph, data, store
        self.batch_size, self.max_samples, self.threads = batch_size, max_samples, threads

    def fp32_outputs(self, table: Any, tensors: list[str]) -> None:
        """Store the FP32 values of ``tensors`` (each under its own name): the targets, taken once before the
        technique changes anything."""
        for outs in simulated(self.graph, table, FP32, tensors, self.data, self.batch_size, self.max_samples,
                              self.threads):
            for t in tensors:
                self.store.add(t, outs[t])

    def quantized_input(self, table: Any, tensor: str, prec: Precision, key: str = "input") -> None:
        """Store under ``key`` the values of ``tensor`` as its readers see them in the simulation at uniform
        ``prec`` built from ``table`` now (its rounding at this moment), fake-quantized when it is quantized."""
        enc = input_encoding(self.graph, table, tensor, prec)
        for outs in simulated(self.graph, table, prec, [tensor], self.data, self.batch_size, self.max_samples,
                              self.threads):
            x = outs[tensor].astype(np.float32)
            self.store.add(key, x if enc is None else enc.fake_quantize(x))

    def samples(self, inputs: str, targets: str, batch: int, rng: np.random.Generator) -> Samples:
        """The stored ``inputs`` and ``targets`` keys as aligned random batches of ``batch`` samples."""
        return Samples(self.store.chunks(inputs), self.store.chunks(targets), batch, rng)

    def drop(self, *keys: str) -> None:
        """Forget ``keys`` (their memory and files are released)."""
        for k in keys:
            self.store.drop(k)


__all__ = ["ActivationSampler", "ActivationStore", "Samples", "input_encoding", "simulated"]
