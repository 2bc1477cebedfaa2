"""Calibrate the ``cpu_x86`` latency target against measured ONNX Runtime CPU latency, and check how well
the estimate ranks it (Spearman rank correlation), on the examples.

    .venv/bin/python bench/latency_fit.py [--experiments experiments/mnist_cnn.yaml experiments/minilm.yaml]
        [--mixed 24 12] [--rounds 15 7] [--save runs/latency_fit.json] [--load runs/latency_fit.json] [--write]

For each experiment: the uniform candidates, FP32 and a set of mixed profiles (random mixes, and a base
candidate with a fraction of its groups at another one) are exported as QDQ models (``export_qdq``) and
measured on the experiment's first evaluation batch with ONNX Runtime (CPU EP, 1 thread, default graph
optimizations), all sessions interleaved in rounds, median per profile, ms per sample. The qdq_runtime
coefficients (see ``sweeper/cost/latency.py``) are fitted by non-negative least squares on relative error,
jointly over both examples, on the uniform profiles and every other mixed profile; the remaining mixed
profiles are held out. Printed: the rank correlation of the previous cpu_x86 roofline and of the fitted
target, over all profiles and over the held-out ones; ``--write`` stores the fit in the target YAML.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from scipy.optimize import nnls
from scipy.stats import spearmanr

from sweeper.config.experiment import load_experiment
from sweeper.cost.latency import QDQ_FIELDS, TARGETS_DIR, CostModel, QdqRuntime, Target, load_target
from sweeper.cost.measure import measure_interleaved
from sweeper.export.qdq import export_qdq
from sweeper.pipeline import Workspace
from sweeper.quant.precision import FP32
from sweeper.quant.profile import Profile

# the cpu_x86 target before this calibration (a roofline from micro-benchmarks), for the "before" figures
PREVIOUS_CPU_X86 = {"name": "cpu_x86_roofline", "bandwidth_gbps": 20, "overhead_us_per_layer": 1.0,
                    "throughput_gmacs": {"int4": 100, "int8": 100, "int16": 50, "fp16": 25, "fp32": 50}}
PREFIX = {"ns_per_conv_mac": "conv", "ns_per_matmul_mac": "matmul", "ns_per_activation": "act", "ns_per_pool_element": "pool",
          "ns_per_weight_dequant": "wdq"}
# the per-layer overhead is left out: constant within a model, it cannot change a ranking
# MaxPools in FP32/fp16 (NCHWc) and fused int8 (NhwcMaxPool) groups are cheap in ORT's profile; held at 0 so that
# the fit cannot hand them the cost of the fused int8 convolution they always come with on the examples
HELD_AT_ZERO = {"pool:fp32", "pool:fp16", "pool:int8"}
FEATURES = [f"{PREFIX[fld]}:{k}" for fld, keys in QDQ_FIELDS.items() for k in keys
            if f"{PREFIX[fld]}:{k}" not in HELD_AT_ZERO]
WHAT = {"measured_ms_per_sample": "median wall time per sample",
        "cpu_ms_per_sample": "median thread CPU time per sample"}
_ZERO = QdqRuntime(**{f: {k: 0.0 for k in keys} for f, keys in QDQ_FIELDS.items()})


def profiles_for(ws: Workspace, n_mixed: int, seed: int = 0) -> dict[str, Profile]:
    """FP32, the uniform candidates and ``n_mixed`` mixed profiles (half random mixes, half a base candidate
    with 10-60 % of its groups at another candidate), named ``fp32``, ``uniform:<c>``, ``mixed:<k>``."""
    groups = [g.name for g in ws.graph.groups]
    cands = list(ws.exp.candidates)
    out = {"fp32": Profile.uniform(groups, FP32)}
    out.update({f"uniform:{c.name}": Profile.uniform(groups, c) for c in cands})
    rng = random.Random(seed)
    seen = {p.key for p in out.values()}
    k = 0
    while k < n_mixed:
        if k % 2 == 0:
            p = Profile.make({g: rng.choice(cands) for g in groups})
        else:
            base, other = rng.sample(cands, 2)
            frac = rng.choice((0.1, 0.3, 0.6))
            p = Profile.make({g: other if rng.random() < frac else base for g in groups})
        if p.key not in seen:
            seen.add(p.key)
            out[f"mixed:{k:02d}"] = p
            k += 1
    return out


def measure_experiment(path: str, n_mixed: int, rounds: int) -> dict:
    """Measured per-sample latency and the fit features of each profile of one experiment."""
    ws = Workspace(load_experiment(path), threads=1)
    try:
        profiles = profiles_for(ws, n_mixed)
        models = {n: (ws.prepared if n == "fp32" else export_qdq(ws.graph, ws.table, p)).SerializeToString()
                  for n, p in profiles.items()}
        feeds = {k: ws.eval_data[k][: ws.exp.batch_size] for k in ws.graph.input_names}
        t0 = time.perf_counter()
        stats = measure_interleaved(models, feeds, rounds=rounds, min_rounds=rounds, budget_s=0.0)
        seconds = time.perf_counter() - t0
        batch = len(next(iter(feeds.values())))
        probe = CostModel(ws.graph, ws.stats.shapes, Target(name="probe", qdq=_ZERO), batch=batch)
        before = CostModel(ws.graph, ws.stats.shapes, Target.from_dict(PREVIOUS_CPU_X86), batch=1)
        rows = [{"name": n, "profile": p.label(), "assignment": p.to_json(),
                 "measured_ms_per_sample": stats[n].median, "cpu_ms_per_sample": stats[n].cpu_median,
                 "spread": stats[n].spread_json(),
                 "features": probe.features(p), "previous_estimate_ms": before.latency_ms(p)}
                for n, p in profiles.items()]
        return {"experiment": path, "batch": probe.batch, "measure_seconds": seconds, "rows": rows}
    finally:
        ws.close()


def refeature(docs: list[dict]) -> None:
    """Recompute the features of saved measurements with the current CostModel (the profiles are rebuilt
    from their seed, so measurements survive a change of the model's features)."""
    for doc in docs:
        ws = Workspace(load_experiment(doc["experiment"]), threads=1)
        try:
            n_mixed = sum(r["name"].startswith("mixed:") for r in doc["rows"])
            profiles = profiles_for(ws, n_mixed)
            probe = CostModel(ws.graph, ws.stats.shapes, Target(name="probe", qdq=_ZERO), batch=doc["batch"])
            for r in doc["rows"]:
                assert profiles[r["name"]].label() == r["profile"], r["name"]
                r["features"] = probe.features(profiles[r["name"]])
        finally:
            ws.close()


def fit(docs: list[dict], key: str) -> dict[str, float]:
    """NNLS of per-sample latency ``key`` on the features, on relative error, over the fit rows."""
    a, b = [], []
    for doc in docs:
        for r in doc["rows"]:
            if held_out(r):
                continue
            y = r[key] * 1e6  # ns
            a.append([r["features"].get(f, 0.0) / y for f in FEATURES])
            b.append(1.0)
    coef, _ = nnls(np.asarray(a), np.asarray(b))
    return dict(zip(FEATURES, (float(c) for c in coef), strict=True))


def held_out(row: dict) -> bool:
    return row["name"].startswith("mixed:") and int(row["name"].split(":")[1]) % 2 == 1


def predict(coef: dict[str, float], row: dict) -> float:
    return sum(coef.get(f, 0.0) * row["features"].get(f, 0.0) for f in FEATURES) * 1e-6


def target_from(coef: dict[str, float]) -> dict:
    section = {fld: {k: round(coef.get(f"{PREFIX[fld]}:{k}", 0.0), 6) for k in keys} for fld, keys in QDQ_FIELDS.items()}
    return {"overhead_us_per_layer": 0.0, "qdq_runtime": section}


def rank_report(docs: list[dict], estimate, key: str) -> list[str]:  # noqa: ANN001
    lines = [f"  measured = {WHAT[key]}"]
    for doc in docs:
        rows = doc["rows"]
        for label, sel in (("all", rows), ("held-out", [r for r in rows if held_out(r)]),
                           ("uniform", [r for r in rows if not r["name"].startswith("mixed:")])):
            if len(sel) >= 3:
                rho = spearmanr([estimate(r) for r in sel], [r[key] for r in sel])[0]
                lines.append(f"  {Path(doc['experiment']).stem:>10} {label:>9} ({len(sel):2d} profiles): {rho:+.3f}")
    return lines


def write_target(coef: dict[str, float], docs: list[dict]) -> Path:
    """Store the fit in sweeper/cost/targets/cpu_x86.yaml, with how it was measured."""
    import onnxruntime as ort
    import yaml

    fitted = target_from(coef)
    ratios = []
    for doc in docs:
        fp32 = next(r["measured_ms_per_sample"] for r in doc["rows"] if r["name"] == "fp32")
        uni = ", ".join(f"{r['name'].split(':')[1]} {r['measured_ms_per_sample'] / fp32:.2f}x"
                        for r in doc["rows"] if r["name"].startswith("uniform:"))
        ratios.append(f"#   {Path(doc['experiment']).stem} (batch {doc['batch']}, FP32 {fp32:.4f} ms/sample): {uni}")
    n = sum(len(d["rows"]) for d in docs)
    head = [
        "# ONNX Runtime CPU EP on this machine's x86-64 CPU, 1 thread, default graph optimizations, running the",
        "# exported QDQ models (sweeper export) as a user would. A qdq_runtime target: see sweeper/cost/latency.py.",
        "#",
        f"# FITTED by bench/latency_fit.py on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC (onnxruntime "
        f"{ort.__version__}, {platform.processor() or platform.machine()}): {n} profiles of the examples",
        "# (FP32, the uniform candidates, random and base+fraction mixes) measured on their first evaluation",
        "# batch, all sessions interleaved in rounds, median per profile; non-negative least squares on relative",
        "# error over the uniform profiles and half the mixes (the other half held out). Measured ratios to FP32:",
        *ratios,
        "# Only w8a8 with 8-bit neighbours runs integer kernels (QLinearConv/QGemm/MatMulInteger): faster than",
        "# FP32. Every other quantized group runs float kernels on dequantized weights (dequantized at every run)",
        "# and activations (Q + DQ per element): slower than FP32; fp16 adds Cast round trips.",
        "# Units: ns per MAC, ns per activation element (per sample), ns per weight element (per run).",
    ]
    body = {"name": "cpu_x86",
            "description": "ONNX Runtime CPU EP, 1 thread, exported QDQ models (fitted by bench/latency_fit.py)",
            **fitted}
    path = TARGETS_DIR / "cpu_x86.yaml"
    path.write_text("\n".join(head) + "\n" + yaml.safe_dump(body, sort_keys=False))
    load_target("cpu_x86")  # it must load
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiments", nargs="+", default=["experiments/mnist_cnn.yaml", "experiments/minilm.yaml"])
    ap.add_argument("--mixed", nargs="+", type=int, default=[24, 12], help="mixed profiles per experiment")
    ap.add_argument("--rounds", nargs="+", type=int, default=[15, 7], help="interleaved rounds per experiment")
    ap.add_argument("--save", help="write the measurements to this JSON file")
    ap.add_argument("--load", help="fit measurements saved earlier instead of measuring")
    ap.add_argument("--fit-on", choices=list(WHAT), default="cpu_ms_per_sample",
                    help="fit the thread CPU time (default: robust on a shared machine) or the wall time")
    ap.add_argument("--refeature", action="store_true", help="with --load: recompute the features")
    ap.add_argument("--write", action="store_true", help="store the fitted target in sweeper/cost/targets/cpu_x86.yaml")
    args = ap.parse_args()
    if args.load:
        docs = json.loads(Path(args.load).read_text())
        if args.refeature:
            refeature(docs)
    else:
        docs = []
        for i, exp in enumerate(args.experiments):
            doc = measure_experiment(exp, args.mixed[min(i, len(args.mixed) - 1)],
                                     args.rounds[min(i, len(args.rounds) - 1)])
            print(f"{exp}: {len(doc['rows'])} profiles measured in {doc['measure_seconds']:.0f}s", file=sys.stderr)
            docs.append(doc)
            if args.save:  # after each experiment: a long run keeps what it measured
                Path(args.save).parent.mkdir(parents=True, exist_ok=True)
                Path(args.save).write_text(json.dumps(docs, indent=1))
    for doc in docs:
        fp32 = next(r["measured_ms_per_sample"] for r in doc["rows"] if r["name"] == "fp32")
        print(f"{doc['experiment']} (ms per sample, batch {doc['batch']}; median [IQR], ratio to FP32):")
        for r in doc["rows"]:
            if not r["name"].startswith("mixed:"):
                s = r["spread"]
                print(f"  {r['name']:>16} {r['measured_ms_per_sample']:.4f} [{s['q1']:.4f}, {s['q3']:.4f}] "
                      f"{r['measured_ms_per_sample'] / fp32:.2f}x; CPU {s['cpu_median']:.4f} "
                      f"[{s['cpu_q1']:.4f}, {s['cpu_q3']:.4f}]")
    coef = fit(docs, args.fit_on)
    print(f"fitted on the {WHAT[args.fit_on]}")
    for key in WHAT:
        print("Spearman rank correlation, estimate vs measured, previous cpu_x86 (roofline):")
        print("\n".join(rank_report(docs, lambda r: r["previous_estimate_ms"], key)))
        print("Spearman rank correlation, estimate vs measured, fitted cpu_x86 (qdq_runtime):")
        print("\n".join(rank_report(docs, lambda r: predict(coef, r), key)))
    print("fitted:", json.dumps(target_from(coef)))
    if args.write:
        print(f"written: {write_target(coef, docs)}")


if __name__ == "__main__":
    main()
