"""Step 2a: sensitivity analysis (AIMET's QuantAnalyzer, on the worker pool).

At a base precision: FP32 vs weights-only vs activations-only quantized; per quantizer group the metric
with only that group quantized (enable-one) and with all but that group quantized (disable-one); the
output SQNR of each group's layer vs FP32 on a calibration batch; weight and activation ranges.

:func:`quantization_noise` is the cheap estimate AMP's ``fast`` search ranks (group, precision) pairs by: the
noise-to-signal ratio each group's own quantizers add (its weights, and its input activations on a few
calibration samples), from one FP32 run and NumPy, without simulating any profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from sweeper.eval.target import Target
from sweeper.model.session import ort_session
from sweeper.pipeline import Workspace
from sweeper.quant.precision import FP32, Precision
from sweeper.quant.profile import Profile
from sweeper.search.evaluate import Evaluated
from sweeper.search.names import RANKINGS
from sweeper.search.step import Batch, PoolNeeds, Step, StepContext, StepOutput, run_step
from sweeper.sim.quantsim import probe_tensor
from sweeper.tracking.tracker import Tracker

# "noise": the quantization-noise estimate alone, without the 2 x groups evaluations and the groups SQNR probes
# (3 evaluations in all, for models with hundreds of groups); every ranking reports the estimate
NOISE_SAMPLES = 8  # calibration samples (batched data) the activation noise is measured on
NOISE_ELEMENTS = 1 << 14  # values drawn from each activation (with replacement): NSR within a few percent


def fp32_activations(ws: Workspace, tensors: list[str], samples: int = NOISE_SAMPLES) -> dict[str, np.ndarray]:
    """``tensors`` of the FP32 model on the first ``samples`` calibration samples (the first feed of
    feeds-layout data), from one run with them exposed as outputs."""
    feeds = ws.cal_set.first(ws.graph.input_names, samples)
    aug = onnx.ModelProto()
    aug.CopyFrom(ws.prepared)
    present = {o.name for o in aug.graph.output} | set(feeds)
    for t in dict.fromkeys(tensors):
        if t not in present:
            aug.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    sess = ort_session(aug, ws.threads)
    names = [o.name for o in sess.get_outputs()]
    values = dict(zip(names, sess.run(names, feeds), strict=True))
    values.update(feeds)
    return {t: np.asarray(values[t]) for t in tensors if t in values}


def _nsr(x: np.ndarray, y: np.ndarray) -> float:
    """Noise-to-signal power ratio of ``y`` as an approximation of ``x``."""
    x64 = x.astype(np.float64)
    noise = float(np.sum((x64 - y.astype(np.float64)) ** 2))
    return noise / max(float(np.sum(x64 ** 2)), 1e-30)


def _draw(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """At most ``NOISE_ELEMENTS`` values of ``x`` drawn uniformly (all of them when it is smaller): the NSR of
    a per-tensor quantizer is a mean over values, which a sample this size estimates closely."""
    flat = np.asarray(x, np.float32).reshape(-1)
    return flat if flat.size <= NOISE_ELEMENTS else flat[rng.integers(0, flat.size, NOISE_ELEMENTS)]


def _channel_power(x: np.ndarray, axis: int) -> np.ndarray:
    """Mean square of ``x`` per index along ``axis``."""
    moved = np.moveaxis(np.asarray(x, np.float32), axis, 0)
    flat = moved.reshape(moved.shape[0], -1)
    return np.einsum("ij,ij->i", flat, flat, dtype=np.float64) / max(1, flat.shape[1])


def input_power_map(ws: Workspace, weight: str, acts: dict[str, np.ndarray]) -> np.ndarray | None:
    """For each element of ``weight``, the mean square of the input value it multiplies (broadcastable to
    the weight; from its first user's FP32 input in ``acts``), or None for a layout not known here. A weight
    error matters in proportion to the input it meets: zero inputs make any error on their weights harmless."""
    graph = ws.graph
    node = graph.node_by_name[graph.weight_quantizers[weight].op]
    w = graph.weight_array(weight)
    pos = list(node.input).index(weight)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    x = acts.get(node.input[1 - pos] if node.op_type == "MatMul" else node.input[0])
    if x is None or x.ndim < 2 or pos > 1:
        return None
    if node.op_type == "Conv" and pos == 1 and x.ndim == w.ndim:
        p, out, ipg = _channel_power(x, 1), w.shape[0], w.shape[1]
        opg = max(1, out // int(attrs.get("group", 1)))
        idx = (np.arange(out)[:, None] // opg) * ipg + np.arange(ipg)[None, :]
        return None if idx.max() >= p.size else p[idx].reshape(out, ipg, *([1] * (w.ndim - 2)))
    if node.op_type == "ConvTranspose" and pos == 1 and x.ndim == w.ndim:
        p = _channel_power(x, 1)
        return p.reshape(-1, *([1] * (w.ndim - 1))) if p.size == w.shape[0] else None
    if w.ndim != 2:
        return None
    if node.op_type == "Gemm" and pos == 1:
        p = _channel_power(x, 0 if attrs.get("transA", 0) else -1)
        pmap = p[None, :] if attrs.get("transB", 0) else p[:, None]
    elif node.op_type == "MatMul":
        pmap = _channel_power(x, -1)[:, None] if pos == 1 else _channel_power(x, -2)[None, :]
    else:
        return None
    return pmap if all(a in (1, b) for a, b in zip(pmap.shape, w.shape, strict=True)) else None


def _weighted_nsr(w: np.ndarray, wq: np.ndarray, power: np.ndarray | None) -> float:
    """NSR of the layer's output the weight error makes, for inputs of the given power per element
    (uncorrelated inputs); the plain weight NSR without one."""
    if power is None:
        return _nsr(w, wq)
    w64 = w.astype(np.float64)
    signal = float(np.sum(w64 ** 2 * power))
    return float(np.sum((w64 - wq) ** 2 * power)) / signal if signal > 0 else _nsr(w, wq)


def quantization_noise(ws: Workspace, precisions: list[Precision], samples: int = NOISE_SAMPLES
                       ) -> dict[tuple[str, str], float]:
    """``(group, precision name) -> NSR`` the group's own quantizers add at that precision: over its input
    activations ||x - fake_quant(x)||^2 / ||x||^2 (on ``samples`` calibration samples), plus over its
    weights the output NSR their error makes given the power of the inputs they multiply. Noise-to-signal
    ratios of independent quantizers roughly add up along a network, so the sum ranks pairs by the damage
    they do at the cost of one FP32 run, instead of one simulated evaluation each."""
    table, graph = ws.table, ws.graph
    users = {w: graph.node_by_name[q.op] for w, q in graph.weight_quantizers.items()}
    wanted = [t for g in graph.groups for t in g.activations if graph.is_float(t)]
    wanted += [i for n in users.values() for i in n.input if i and i not in graph.weight_quantizers]
    full = fp32_activations(ws, list(dict.fromkeys(wanted)), samples)
    power = {w: input_power_map(ws, w, full) for g in graph.groups for w in g.weights}
    rng = np.random.default_rng(0)
    acts = {t: _draw(full[t], rng) for g in graph.groups for t in g.activations if t in full}
    del full
    cache: dict[tuple[str, str], float] = {}

    def act_noise(t: str, prec: Precision) -> float:
        enc, x = table.act_encoding(t, prec), acts.get(t)
        if enc is None or x is None or x.size == 0:
            return 0.0
        key = (t, "fp16" if enc.dtype == "float" else f"a{prec.act_bits}w{prec.weight_bits}")
        if key not in cache:
            cache[key] = _nsr(x, enc.fake_quantize(x))
        return cache[key]

    def weight_noise(w: str, prec: Precision) -> float:
        if table.weight_encoding(w, prec) is None:
            return 0.0
        key = (w, prec.name if prec.is_fp16 else f"w{prec.weight_bits}")
        if key not in cache:
            cache[key] = _weighted_nsr(graph.weight_array(w), table.weight_value(w, prec), power[w])
        return cache[key]

    return {(g.name, p.name): sum(act_noise(t, p) for t in g.activations) + sum(weight_noise(w, p) for w in g.weights)
            for g in graph.groups for p in precisions}


def analysis_precisions(base: Precision) -> tuple[str, ...]:
    return tuple(dict.fromkeys([FP32.name, base.name, base.weights_only().name, base.activations_only().name]))


def analysis_profiles(ws: Workspace, base: Precision) -> dict[str, Profile]:
    groups = [g.name for g in ws.graph.groups]
    fp32 = Profile.uniform(groups, FP32)
    all_base = Profile.uniform(groups, base)
    profiles = {"weights_only": Profile.uniform(groups, base.weights_only()),
                "activations_only": Profile.uniform(groups, base.activations_only()),
                "base": all_base}
    for g in groups:
        profiles[f"enable:{g}"] = fp32.with_groups({g: base})
        profiles[f"disable:{g}"] = all_base.with_groups({g: FP32})
    return profiles


def rank_groups(groups: list[dict[str, Any]], ranking: str, higher_is_better: bool) -> list[dict[str, Any]]:
    """Most sensitive first."""
    sign = 1.0 if higher_is_better else -1.0
    if ranking == "enable_one":  # the lower the metric with only this group quantized, the more sensitive
        key = lambda g: sign * g["enable_one"]  # noqa: E731
    elif ranking == "disable_one":  # the higher the metric when only this group stays float
        key = lambda g: -sign * g["disable_one"]  # noqa: E731
    elif ranking == "sqnr":
        key = lambda g: g["sqnr_db"] if g["sqnr_db"] is not None else np.inf  # noqa: E731
    elif ranking == "noise":  # the more noise the group's own quantizers add, the more sensitive
        if any(g.get("noise_nsr") is None for g in groups):
            raise ValueError("ranking noise: these groups have no noise estimate (an older analysis): run analyze again")
        key = lambda g: -g["noise_nsr"]  # noqa: E731
    else:
        raise ValueError(f"unknown ranking {ranking!r}: expected one of {', '.join(RANKINGS)}")
    ordered = sorted(groups, key=lambda g: (key(g), g["name"]))
    for i, g in enumerate(ordered, 1):
        g["rank"] = i
    return ordered


def _hist(ws: Workspace, tensor: str, bins: int = 64) -> dict[str, list[float]] | None:
    st = ws.stats.tensors.get(tensor)
    if st is None or st.hist is None or st.edges is None:
        return None
    counts = st.hist.reshape(bins, -1).sum(axis=1) if len(st.hist) % bins == 0 else st.hist
    edges = st.edges[:: len(st.hist) // len(counts)] if len(counts) != len(st.hist) else st.edges
    return {"counts": [int(c) for c in counts], "edges": [float(e) for e in edges]}


def interpret(summary: dict[str, float], target: Target) -> str:
    drop = target.drop
    w, a = drop(summary["weights_only"]), drop(summary["activations_only"])
    parts = [f"weights-only drop {w:+.4f}, activations-only drop {a:+.4f}, all quantized {drop(summary['base']):+.4f}."]
    if target.meets(summary["weights_only"]) and target.meets(summary["activations_only"]):
        parts.append("Neither weights nor activations alone break the target.")
    elif w > a:
        parts.append("Weights hurt more than activations: try higher weight bits (e.g. w8/w16) or AdaRound.")
    else:
        parts.append("Activations hurt more than weights: try 16-bit activations on the sensitive layers.")
    return " ".join(parts)


@dataclass
class AnalysisReport:
    doc: dict[str, Any]
    output: Path


def _group_doc(ws: Workspace, g: Any, results: dict[str, Evaluated], sqnr: dict[str, float],
               noise: dict[tuple[str, str], float], base: Precision) -> dict[str, Any]:
    """One group's entry of sensitivity.json: its metrics (None where not evaluated), SQNR, the noise its
    quantizers add at the base precision, and weight/activation ranges."""
    def metric(name: str) -> float | None:
        return results[name].metric if name in results else None

    def act(a: str) -> dict[str, Any]:
        st = ws.stats.tensors[a]
        return {"name": a, "min": float(st.min) if st.count else 0.0, "max": float(st.max) if st.count else 0.0,
                "sentinels": int(st.sentinels),
                # histograms matter where the encoding comes from them (mse/percentile)
                "hist": _hist(ws, a) if ws.exp.calibration.scheme != "minmax" else None}

    return {"name": g.name, "ops": g.ops, "macs": g.macs, "probe": probe_tensor(ws.graph, g.name),
            "enable_one": metric(f"enable:{g.name}"), "disable_one": metric(f"disable:{g.name}"),
            "sqnr_db": sqnr.get(g.name), "noise_nsr": noise[(g.name, base.name)],
            "weights": [{"name": w, "min": float(ws.graph.weight_array(w).min()),
                         "max": float(ws.graph.weight_array(w).max())} for w in g.weights],
            "activations": [act(a) for a in g.activations]}


class AnalyzeStep(Step):
    """Step 2a as a :class:`~sweeper.search.step.Step`: two batches, each under the reference its profiles
    share prefixes with (workers then run most of them from stored activations): the base for
    disable-one (and weights-/activations-only), FP32 for enable-one; then SQNR probes and the report."""

    name = "analyze"
    strategy = "analyzer"
    export_each = False

    def __init__(self, ws: Workspace, base: Precision, ranking: str = "enable_one") -> None:
        if ranking not in RANKINGS:
            raise ValueError(f"unknown ranking {ranking!r}")
        self.ws, self.base, self.ranking = ws, base, ranking
        self.profiles = analysis_profiles(ws, base)
        order = [g.name for g in ws.graph.groups]
        if ranking == "noise":  # the summary's three profiles only
            self.profiles = {k: p for k, p in self.profiles.items() if ":" not in k}
        enable = {f"enable:{g}": self.profiles[f"enable:{g}"] for g in reversed(order) if f"enable:{g}" in self.profiles}
        rest = {k: p for k, p in self.profiles.items() if k not in enable}  # latest first: it stores the most cuts
        self.plan = [Batch(rest, self.profiles["base"])] + ([Batch(enable, Profile.uniform(order, FP32))] if enable else [])
        self.results: dict[str, Evaluated] = {}

    def params(self) -> dict[str, Any]:
        return {"base": self.base.name, "ranking": self.ranking}

    def pool_needs(self) -> PoolNeeds:
        return PoolNeeds(analysis_precisions(self.base), probes=self.ranking != "noise", reuse=True)

    def propose(self) -> Batch | None:
        return self.plan.pop(0) if self.plan else None

    def observe(self, results: dict[str, Evaluated], profiles: dict[str, Profile]) -> None:
        self.results.update(results)

    def finish(self, ctx: StepContext) -> StepOutput:
        from sweeper.report.sensitivity import write_sensitivity_report

        ws, exp, pool, results = self.ws, self.ws.exp, ctx.pool, self.results
        names = [g.name for g in ws.graph.groups]
        calls = [(self.profiles[f"enable:{g}"].to_json(), probe_tensor(ws.graph, g)) for g in names
                 if self.ranking != "noise"]
        sqnr = {names[i]: float(v) for i, v in pool.map_calls("layer_sqnr", calls)} if calls else {}
        noise = quantization_noise(ws, [self.base])
        groups = [_group_doc(ws, g, results, sqnr, noise, self.base) for g in ws.graph.groups]
        summary = {"fp32": ws.fp32_metric, **{k: results[k].metric for k in ("weights_only", "activations_only", "base")}}
        doc = {
            "experiment": exp.name, "metric": exp.metric, "higher_is_better": exp.higher_is_better,
            "base": self.base.name, "fp32_metric": ws.fp32_metric, "target": {"max_drop": exp.max_drop},
            "summary": summary, "interpretation": interpret(summary, ws.target),
            "ranking": self.ranking, "evaluations": len(self.profiles), "probes": len(calls),
            "groups": rank_groups(groups, self.ranking, exp.higher_is_better),
        }

        def render(plot_names: list[str]) -> dict[str, bytes | None]:
            got = pool.map_calls("render_plot", [(doc, n) for n in plot_names])
            return {plot_names[i]: png for i, png in got}

        files = write_sensitivity_report(doc, ctx.staging, render=render)
        return StepOutput(doc, {"fp32_metric": ws.fp32_metric, **{f"summary_{k}": v for k, v in summary.items()}},
                          [Path(p).name for p in files.values()], filename="sensitivity.json",
                          value=AnalysisReport(doc, ctx.final))


def run_analyze(ws: Workspace, pool, tracker: Tracker | None, base: Precision,  # noqa: ANN001
                ranking: str = "enable_one", fresh: bool = False) -> AnalysisReport:
    """Step 2a on ``pool`` (see :class:`AnalyzeStep`)."""
    return run_step(AnalyzeStep(ws, base, ranking), ws, pool, tracker, fresh).value


def format_analysis(doc: dict[str, Any], top: int = 15) -> str:
    s = doc["summary"]
    lines = [f"fp32 {s['fp32']:.4f} | weights-only {s['weights_only']:.4f} | activations-only "
             f"{s['activations_only']:.4f} | all at {doc['base']} {s['base']:.4f}", doc["interpretation"], "",
             f"{'rank':>4}  {'group':<48} {'enable-one':>10} {'disable-one':>11} {'SQNR dB':>8} {'noise dB':>8}"]

    def num(v: float | None, width: int, fmt: str) -> str:
        return f"{v:>{width}{fmt}}" if v is not None else f"{'-':>{width}}"

    for g in doc["groups"][:top]:
        name = g["name"] if len(g["name"]) <= 48 else "..." + g["name"][-45:]
        nsr = g.get("noise_nsr")
        noise_db = 10 * np.log10(nsr) if nsr else None
        lines.append(f"{g['rank']:>4}  {name:<48} {num(g['enable_one'], 10, '.4f')} {num(g['disable_one'], 11, '.4f')} "
                     f"{num(g['sqnr_db'], 8, '.1f')} {num(noise_db, 8, '.1f')}")
    if len(doc["groups"]) > top:
        lines.append(f"  ... {len(doc['groups']) - top} more groups in sensitivity.json")
    return "\n".join(lines)
