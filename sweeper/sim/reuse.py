"""Prefix reuse: evaluate a profile from the stored activations of a reference profile.

The profiles of a sweep step often differ from one *reference* profile in a few groups only: phase 1 of
the greedy AMP changes one group of the uniform baseline at a time, the analyzer's enable-one profiles
change one group of FP32. Everything the simulation computes before the first node that reads a changed
quantizer's inputs is the same as under the reference. So a worker runs the reference once over its
evaluation data, keeps the tensors that cross a few *cut points* of the simulation graph, and evaluates a
later profile with a *suffix* session that starts at the last cut before its first change.

The suffix session runs the same nodes on the same values; the metric is the one a full run gives (tested
bit for bit on the example). Cuts are chosen to skip the most MACs for the profiles that change one group,
within a memory budget per worker: the stored tensors of every evaluation batch plus the extra sessions
(measured when they are built; the earliest cuts, which save the least, go first when it is exceeded).

A full run of any profile stores, on the way, the cuts its prefix shares with the reference, so no run is
spent on storing alone; a complete store can be handed to other workers (:meth:`PrefixReuse.export`,
:meth:`PrefixReuse.install`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper

from sweeper.model.session import BoundRunner, ort_session
from sweeper.quant.profile import Profile
from sweeper.sim.quantsim import QuantSim

_ORT_TYPES = {
    "tensor(float)": onnx.TensorProto.FLOAT, "tensor(float16)": onnx.TensorProto.FLOAT16,
    "tensor(double)": onnx.TensorProto.DOUBLE, "tensor(int64)": onnx.TensorProto.INT64,
    "tensor(int32)": onnx.TensorProto.INT32, "tensor(int8)": onnx.TensorProto.INT8,
    "tensor(uint8)": onnx.TensorProto.UINT8, "tensor(bool)": onnx.TensorProto.BOOL,
}
RunFn = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def _refs(node: onnx.NodeProto) -> set[str]:
    """Every name ``node`` reads, including the outer-scope names its subgraphs (If branches) read."""
    names = {i for i in node.input if i}
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            for n in g.node:
                names |= _refs(n)
    return names


def _resident_bytes() -> int | None:
    """This process's resident memory (Linux), to measure what a session takes; None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _tensor_bytes(t: onnx.TensorProto) -> int:
    if t.raw_data:
        return len(t.raw_data)
    return int(np.prod(t.dims)) * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


def _subgraph_bytes(node: onnx.NodeProto) -> int:
    """Bytes of the constants inside ``node``'s subgraphs (a layer's per-precision weights)."""
    total = 0
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            total += sum(_tensor_bytes(t) for t in g.initializer)
            total += sum(_subgraph_bytes(n) for n in g.node)
    return total


@dataclass
class Cut:
    """The simulation from top-level node ``index`` on, fed with the tensors computed before it."""

    index: int
    frontier: tuple[str, ...]  # tensors computed before the cut that the suffix reads
    early_outputs: tuple[str, ...]  # graph outputs computed before the cut (taken from the store)
    saved: float  # fraction of the model's MACs computed before the cut
    session: Any = None
    runner: BoundRunner | None = None  # the session with the profile's control inputs bound
    session_inputs: frozenset[str] = frozenset()
    complete: bool = False  # its tensors are stored for every batch of the data, under the reference


@dataclass
class _Batch:
    inputs: dict[str, np.ndarray]  # a copy of the model inputs of the batch (to recognize it)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)  # cut tensors, as under the reference


class PrefixReuse:
    """Runs profiles of ``sim`` from stored activations of a reference profile (see the module docstring).

    ``shapes`` are observed tensor shapes (batch axis first) used to weigh cuts by MACs and memory;
    ``samples`` is the size of the evaluation data; ``memory_mb`` bounds the stored tensors.
    """

    def __init__(self, sim: QuantSim, shapes: Mapping[str, tuple[int, ...]], samples: int,
                 memory_mb: float = 1024.0, max_cuts: int = 8) -> None:
        self.sim = sim
        self.samples = max(1, samples)
        self.budget = memory_mb * 1e6
        self.max_cuts = max_cuts
        model = sim.model
        self.nodes = list(model.graph.node)
        self.output_names = [o.name for o in model.graph.output]
        self.data_inputs = set(sim.graph.input_names)
        uses = [_refs(n) for n in self.nodes]
        self.produced = {o: i for i, n in enumerate(self.nodes) for o in n.output if o}
        self.first_use: dict[str, int] = {}
        for i, names in enumerate(uses):
            for name in names:
                self.first_use.setdefault(name, i)
        # names read from node i on
        self._suffix_reads: list[set[str]] = [set() for _ in range(len(self.nodes) + 1)]
        for i in range(len(self.nodes) - 1, -1, -1):
            self._suffix_reads[i] = self._suffix_reads[i + 1] | uses[i]
        self._shapes = dict(shapes)
        self._measured: dict[int, float] = {}  # session memory measured at build: -1 capture, else cut index
        self._weights = self._node_macs(shapes)
        # weight bytes each top-level node brings into a session (outer initializers at their first reader):
        # the capture session holds them all, a suffix session those from its cut on
        inits = {t.name: _tensor_bytes(t) for t in model.graph.initializer}
        claimed: set[str] = set()
        self._node_bytes = []
        for n, names in zip(self.nodes, uses, strict=True):
            outer = [t for t in names if t in inits and t not in claimed]
            claimed.update(outer)
            self._node_bytes.append(_subgraph_bytes(n) + sum(inits[t] for t in outer))
        self._suffix_bytes = np.concatenate([np.cumsum(self._node_bytes[::-1])[::-1], [0]]).astype(float)
        self.cuts: list[Cut] = self._plan(shapes)
        self.reference: Profile | None = None
        self._ref_feeds: dict[str, np.ndarray] = {}
        self._batches: list[_Batch] = []
        self._capture_session: Any = None
        self._capture_runner: BoundRunner | None = None
        self._pending: tuple[list[Cut], list[int]] = ([], [])
        self.stats = {"captures": 0, "suffix_batches": 0, "full_batches": 0}

    # -- planning ---------------------------------------------------------------------------------
    def _node_macs(self, shapes: Mapping[str, tuple[int, ...]]) -> list[float]:
        sim = self.sim
        macs = sim.graph.compute_macs(dict(shapes))
        by_name = dict(macs)
        for layer in sim.layers.values():  # a layer's If node carries its ops' MACs
            by_name[f"{layer.weight}::select0"] = sum(macs.get(n.name, 0) for n in layer.nodes)
        weights = [float(by_name.get(n.name, 0)) for n in self.nodes]
        if sum(weights) <= 0:  # no weighted ops: every node counts the same
            weights = [1.0] * len(self.nodes)
        return weights

    def group_positions(self) -> dict[str, int]:
        """Per quantizer group, the first top-level node that reads one of its run-time inputs: where a
        profile that changes only this group first differs from any other."""
        graph, group_of = self.sim.graph, self.sim.table.group_of
        owner: dict[str, str] = {w: w for w in graph.weight_quantizers}
        owner.update({b: bq.weight for b, bq in graph.bias_quantizers.items()})
        inputs = {i.name for i in self.sim.model.graph.input} - self.data_inputs
        out: dict[str, int] = {}
        for name in inputs:
            tensor = owner.get(name) or name.rsplit("::", 1)[0]
            group = group_of.get(tensor)
            if group is not None and name in self.first_use:
                out[group] = min(out.get(group, len(self.nodes)), self.first_use[name])
        return out

    def session_bytes(self, cuts: Sequence[int] | None = None) -> float:
        """Memory of the extra sessions: the capture session plus one suffix session per cut; measured when
        they were built (weights, prepacked kernels, ONNX Runtime's arena), else their weight bytes."""
        idx = [c.index for c in self.cuts] if cuts is None else list(cuts)
        if not idx:
            return 0.0
        return float(self._measured.get(-1, self._suffix_bytes[0])
                     + sum(self._measured.get(i, self._suffix_bytes[i]) for i in idx))

    def frontier(self, index: int) -> tuple[str, ...]:
        return tuple(sorted(t for t in self._suffix_reads[index] if self.produced.get(t, len(self.nodes)) < index))

    def _bytes_per_sample(self, names: Sequence[str], shapes: Mapping[str, tuple[int, ...]]) -> float:
        total = 0.0
        for t in names:
            base = t.removesuffix("__fq").removesuffix("__raw")
            shape = shapes.get(base)
            if shape is None:
                total += 8.0 * 4096  # unknown (masks, shape arithmetic): a generous guess, checked at capture
            else:
                total += 4.0 * float(np.prod(shape[1:])) if len(shape) > 1 else 8.0 * float(np.prod(shape))
        return total

    def _plan(self, shapes: Mapping[str, tuple[int, ...]]) -> list[Cut]:
        """Greedy choice of cut points: the most MACs skipped, summed over the positions where a single
        group's change first shows, within the memory budget and ``max_cuts``."""
        positions = sorted(set(self.group_positions().values()) - {0})
        if not positions or self.max_cuts <= 0 or self.budget <= 0:
            return []
        total = sum(self._weights)
        prefix = np.concatenate([[0.0], np.cumsum(self._weights)]) / total
        frontiers = {p: self.frontier(p) for p in positions}
        chosen: list[int] = []
        stored: set[str] = set()

        def value(cuts: list[int]) -> float:  # MAC fraction skipped, summed over the positions
            best, j, out = 0.0, 0, 0.0
            ordered = sorted(cuts)
            for p in positions:
                while j < len(ordered) and ordered[j] <= p:
                    best = prefix[ordered[j]]
                    j += 1
                out += best
            return out

        current = 0.0
        while len(chosen) < self.max_cuts:
            best_gain, best_p = 0.0, None
            for p in positions:
                if p in chosen:
                    continue
                extra = [t for t in frontiers[p] if t not in stored]
                need = self._bytes_per_sample([*stored, *extra], shapes) * self.samples
                need += self.session_bytes([*chosen, p])  # the sessions' weights count too
                if need > self.budget:
                    continue
                gain = value([*chosen, p]) - current
                if gain > best_gain + 1e-12:
                    best_gain, best_p = gain, p
            if best_p is None or best_gain < 0.01:  # less than 1 % of one evaluation: not worth a session
                break
            chosen.append(best_p)
            stored.update(frontiers[best_p])
            current += best_gain
        return [Cut(p, frontiers[p], tuple(o for o in self.output_names if self.produced.get(o, 0) < p),
                    float(prefix[p])) for p in sorted(chosen)]

    # -- sessions ---------------------------------------------------------------------------------
    def _session(self, model: onnx.ModelProto) -> Any:
        return ort_session(model, self.sim.threads, exact=self.sim.mode)

    def _capture_model(self) -> onnx.ModelProto:
        m = onnx.ModelProto()
        m.CopyFrom(self.sim.model)
        known = set(self.output_names)
        for t in dict.fromkeys(t for c in self.cuts for t in c.frontier):
            if t not in known and t not in self.data_inputs:
                m.graph.output.append(helper.make_empty_tensor_value_info(t))
        return m

    def _suffix_model(self, cut: Cut, types: Mapping[str, int]) -> onnx.ModelProto:
        src = self.sim.model.graph
        reads = self._suffix_reads[cut.index]
        inputs = [i for i in src.input if i.name in reads]
        inputs += [helper.make_tensor_value_info(t, types[t], None) for t in cut.frontier]
        outputs = [o for o in src.output if o.name not in cut.early_outputs]
        inits = [t for t in src.initializer if t.name in reads]
        graph = helper.make_graph(self.nodes[cut.index:], src.name + f"_suffix{cut.index}", inputs, outputs, inits)
        return helper.make_model(graph, opset_imports=list(self.sim.model.opset_import),
                                 ir_version=self.sim.model.ir_version)

    def build(self, warmup: Mapping[str, np.ndarray] | None = None) -> None:
        """Create the capture session and one suffix session per cut (once, at worker start-up). With a
        ``warmup`` batch, each session runs once (ONNX Runtime's first run sets up its memory arena) and the
        memory each one takes is measured; cuts whose sessions do not fit the budget are dropped."""
        if not self.cuts or self._capture_session is not None:
            return
        before = _resident_bytes()
        self._capture_session = self._session(self._capture_model())
        outs = self._capture_session.get_outputs()
        types = {o.name: _ORT_TYPES.get(o.type, onnx.TensorProto.FLOAT) for o in outs}
        feeds: dict[str, np.ndarray] = {}
        values: dict[str, np.ndarray] = {}
        if warmup is not None:
            warm = Profile.uniform([g.name for g in self.sim.graph.groups], self.sim.precisions[-1])
            feeds = {**self.sim.feeds_for(warm), **warmup}
            values = dict(zip([o.name for o in outs], self._capture_session.run(None, feeds), strict=True))
        after = _resident_bytes()
        if before is not None and after is not None:
            self._measured[-1] = float(max(0, after - before))
        for cut in self.cuts:
            before = _resident_bytes()
            cut.session = self._session(self._suffix_model(cut, types))
            cut.runner = BoundRunner(cut.session)
            cut.session_inputs = frozenset(i.name for i in cut.session.get_inputs())
            if warmup is not None:
                cut.session.run(None, {k: v for k, v in {**feeds, **values}.items() if k in cut.session_inputs})
            after = _resident_bytes()
            if before is not None and after is not None:
                self._measured[cut.index] = float(max(0, after - before))
        del values
        planned = self._bytes_per_sample(self._store_names(self.cuts), self._shapes) * self.samples
        while self.cuts and planned + self.session_bytes() > self.budget:
            dropped = self.cuts.pop(0)  # the earliest cut saves the least
            dropped.session = dropped.runner = None
            planned = self._bytes_per_sample(self._store_names(self.cuts), self._shapes) * self.samples
        if not self.cuts:
            self._capture_session = self._capture_runner = None

    # -- the reference ----------------------------------------------------------------------------
    def set_reference(self, reference: Profile) -> None:
        """Profiles are compared with ``reference`` from now on (a new reference drops what was stored)."""
        if self.reference is not None and self.reference.key == reference.key:
            return
        self.reference = reference
        self._ref_feeds = dict(self.sim.feeds_for(reference))
        self._batches = []
        for cut in self.cuts:
            cut.complete = False

    def complete(self) -> bool:
        """Every cut is stored for the current reference (the store can be shared with other workers)."""
        return self.reference is not None and bool(self.cuts) and all(c.complete for c in self.cuts)

    def export(self) -> dict[str, Any] | None:
        """The complete store, for another worker with the same simulation (see :meth:`install`)."""
        if not self.complete():
            return None
        assert self.reference is not None
        return {"reference": self.reference.key, "cuts": [c.index for c in self.cuts],
                "batches": [(b.inputs, b.tensors) for b in self._batches]}

    def install(self, payload: Mapping[str, Any]) -> bool:
        """Take another worker's complete store for the current reference (instead of computing it)."""
        if self.reference is None or payload.get("reference") != self.reference.key:
            return False
        have = {c.index: c for c in self.cuts}
        cuts = [have[i] for i in payload["cuts"] if i in have]
        if not cuts:
            return False
        keep = set(self._store_names(cuts))
        self._batches = [_Batch(dict(inputs), {t: v for t, v in tensors.items() if t in keep})
                         for inputs, tensors in payload["batches"]]
        for c in self.cuts:
            c.complete = c in cuts
        return True

    def _first_change(self, profile: Profile) -> int | None:
        """Index of the first node whose inputs differ from the reference's (None: no difference)."""
        feeds = self.sim.feeds_for(profile)
        changed = [n for n, x in feeds.items() if not _same(x, self._ref_feeds.get(n))]
        return min(self.first_use.get(n, 0) for n in changed) if changed else None

    def _store_names(self, cuts: Sequence[Cut]) -> list[str]:
        return list(dict.fromkeys(t for c in cuts for t in (*c.frontier, *c.early_outputs)))

    def run_fn(self, profile: Profile) -> RunFn:
        """A run function for ``profile`` (applied to the sim). Under the reference set by
        :meth:`set_reference`: from the deepest stored cut before its first change when there is one; else
        a full run that stores, on the way, every cut its prefix shares with the reference."""
        self.sim.apply(profile)
        self._pending = ([], [])
        if self.reference is None or not self.cuts:
            return self.sim.run
        first = self._first_change(profile)
        shared = [c for c in self.cuts if first is None or c.index <= first]
        ready = [c for c in shared if c.complete]
        if ready and ready[-1] is shared[-1]:
            return self._suffix_run(ready[-1])
        todo = [c for c in shared if not c.complete]
        return self._capturing_run(todo) if todo else self.sim.run

    def finish_run(self) -> None:
        """The evaluation that used the last :meth:`run_fn` went over all its data: the cuts it stored are
        complete if it ran every batch stored so far."""
        todo, seen = self._pending
        self._pending = ([], [])
        if todo and sorted(set(seen)) == list(range(len(self._batches))):
            for cut in todo:
                cut.complete = cut in self.cuts

    def _capturing_run(self, todo: list[Cut]) -> RunFn:
        """A full run (capture session) storing the tensors of ``todo``'s cuts for every batch."""
        names = [o.name for o in self._capture_session.get_outputs()]
        graph_outputs = set(self.output_names)
        runner = BoundRunner(self._capture_session, names) if self._capture_runner is None else self._capture_runner
        self._capture_runner = runner
        runner.bind(self.sim.bound)
        counter = iter(range(10 ** 12))
        seen: list[int] = []
        self.stats["captures"] += 1

        def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            outs = dict(zip(names, runner.run(feeds), strict=True))
            hint = next(counter)
            i = self._find(feeds, hint)
            if i is None:
                self._batches.append(_Batch({k: np.array(v, copy=True) for k, v in feeds.items()}))
                i = len(self._batches) - 1
                for cut in self.cuts:  # a batch the complete cuts lack: no longer complete
                    if cut not in todo:
                        cut.complete = False
            store = self._store_names([c for c in todo if c in self.cuts])  # the budget may drop cuts
            # graph outputs are handed to the evaluator too: store copies, so a metric that edits its
            # inputs in place cannot change what later profiles get
            self._batches[i].tensors.update({t: outs[t].copy() if t in graph_outputs else outs[t] for t in store})
            seen.append(i)
            self._check_budget()
            return [outs[o] for o in self.output_names]

        self._pending = (todo, seen)
        return run

    def _suffix_run(self, cut: Cut) -> RunFn:
        need = cut.session_inputs
        assert cut.runner is not None
        runner = cut.runner
        runner.bind({k: v for k, v in self.sim.bound.items() if k in need})
        counter = iter(range(10 ** 12))
        suffix_outputs = [o for o in self.output_names if o not in cut.early_outputs]

        def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            i = self._find(feeds, next(counter))
            if i is None:  # data the reference never ran on
                self.stats["full_batches"] += 1
                return self.sim.run(feeds)
            batch = self._batches[i]
            if any(t not in batch.tensors for t in cut.frontier):  # never stored for this batch
                self.stats["full_batches"] += 1
                return self.sim.run(feeds)
            sfeeds = {k: v for k, v in feeds.items() if k in need}
            sfeeds.update({t: batch.tensors[t] for t in cut.frontier})
            outs = dict(zip(suffix_outputs, runner.run(sfeeds), strict=True))
            self.stats["suffix_batches"] += 1
            return [outs[o] if o in outs else batch.tensors[o].copy() for o in self.output_names]

        return run

    def _check_budget(self) -> None:
        """Drop the earliest cuts (they save the least) while the stored bytes, projected over the whole
        data, exceed the budget."""
        if not self._batches:
            return
        rows = len(next(iter(self._batches[0].inputs.values()))) if self._batches[0].inputs else 1
        batches = math.ceil(self.samples / max(1, rows))
        while True:
            keep = set(self._store_names(self.cuts))
            for b in self._batches:  # nothing of a dropped cut stays
                if any(t not in keep for t in b.tensors):
                    b.tensors = {t: v for t, v in b.tensors.items() if t in keep}
            per = max(sum(v.nbytes for v in b.tensors.values()) for b in self._batches)
            if not self.cuts or per * batches <= self.budget - self.session_bytes():
                return
            self.cuts.pop(0)

    def _find(self, feeds: Mapping[str, np.ndarray], hint: int) -> int | None:
        """Index of the stored batch with exactly these inputs (tried first at ``hint``)."""
        order = [hint] if 0 <= hint < len(self._batches) else []
        order += [i for i in range(len(self._batches)) if i != hint]
        for i in order:
            b = self._batches[i]
            if b.inputs.keys() == feeds.keys() and all(_same(np.asarray(v), b.inputs[k]) for k, v in feeds.items()):
                return i
        return None


def _same(x: np.ndarray | None, y: np.ndarray | None) -> bool:
    if x is None or y is None:
        return x is y
    return x is y or (x.shape == y.shape and x.dtype == y.dtype and bool(np.array_equal(x, y)))
