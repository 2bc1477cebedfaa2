"""Sweeper against aimet-onnx at uniform precisions: every quantizer's encoding and the metric, side by side.

    .venv/bin/python bench/aimet_parity.py [--precisions w8a8,w4a8,w4a4,w2a8] [--aimet-python PY]
                                           [--keep DIR] [--json]

The problem is the MNIST example (``experiments/mnist_cnn.yaml``): both sides get the same prepared FP32 ONNX
and the same data (calibration on images 0-255, top-1 on images 256-1796), as in ``bench/amp_vs_aimet.py``.
AIMET runs in its own venv (``bench/aimet_side.py --parity``; the venv is created by ``amp_vs_aimet.py``'s
helper when missing) and reports, per precision, its sim's top-1, the top-1 of its QDQ export (float biases,
its default, and int32 biases) and every quantizer's encodings.

Sweeper's side is computed here, three ways per precision (uniform profile, one QuantSim each):

* ``sweeper``: the EncodingTable exactly as the product builds it (``Workspace``);
* ``+weight-aware``: activation statistics collected with the weights fake-quantized at the precision's
  weight bits (:mod:`sweeper.quant.weight_aware`), which is how AIMET calibrates;
* ``+weight-aware, float bias``: the same with biases left float, which is what AIMET's sim (and its default
  QDQ export) does; sweeper stores biases as int32 at input scale x weight scale.

Per quantizer: activation scale ratio sweeper / AIMET and offset difference, per tensor; weight scale ratio per
channel (min and max over channels). Target of issue 8 item 7: |sweeper - AIMET| <= 0.3 points at w4a4.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
EXPERIMENT = "experiments/mnist_cnn.yaml"
TARGET_POINTS = 0.3
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def log(msg: str) -> None:
    print(f"[aimet_parity] {msg}", file=sys.stderr, flush=True)


def run_aimet(py: Path, model: Path, data: Path, workdir: Path, precisions: str) -> dict[str, Any]:
    cmd = [str(py), str(REPO / "bench" / "aimet_side.py"), "--parity", "--precisions", precisions,
           "--model", str(model), "--data", str(data), "--results-dir", str(workdir / "aimet_results"),
           "--batch-size", "256"]
    log("aimet side: " + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ONE_THREAD}, cwd=workdir)
    (workdir / "aimet_side.stderr").write_text(proc.stderr)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"aimet side failed (exit {proc.returncode}); its stderr is above")
    return json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])


class _FloatBiasTable:
    """Mixin: biases stay float (AIMET's simulation), everything else as the table computes it."""

    def bias_value(self, bias: str, prec: Any) -> np.ndarray:  # noqa: ARG002 - same signature as the table's
        return self.graph.weight_array(bias).astype(np.float32)  # type: ignore[attr-defined]


def sweeper_tables(ws: Any, prec: Any) -> dict[str, Any]:
    """The three EncodingTables of one uniform precision (see the module docstring)."""
    from dataclasses import replace

    from sweeper.quant.weight_aware import collect_weight_aware
    from sweeper.sim.encodings import EncodingTable

    tables: dict[str, Any] = {"sweeper": ws.table}
    cal = getattr(ws, "cal_set", None) or ws.cal_data
    by_bits = collect_weight_aware(ws.graph, ws.table.weight, [prec.weight_bits], cal,
                                   batch_size=ws.exp.batch_size, max_samples=ws.exp.calibration.samples,
                                   threads=ws.threads)
    stats = replace(ws.stats, tensors={**ws.stats.tensors, **by_bits.get(prec.weight_bits, {})})
    tables["+weight-aware"] = EncodingTable(ws.graph, stats, ws.quant_config)
    float_bias = type("FloatBiasTable", (_FloatBiasTable, EncodingTable), {})
    tables["+weight-aware, float bias"] = float_bias(ws.graph, stats, ws.quant_config)
    return tables


def metric(ws: Any, table: Any, name: str) -> float:
    from sweeper.quant.profile import Profile
    from sweeper.sim.quantsim import QuantSim

    sim = QuantSim(ws.graph, table, threads=ws.threads, precisions=[name])
    sim.apply(Profile.make({g.name: name for g in ws.graph.groups}))
    return float(ws.evaluator.evaluate(sim.run, ws.eval_data, ws.reference))


def compare_encodings(ws: Any, table: Any, prec: Any, aimet: dict[str, Any]) -> dict[str, Any]:
    """Per-quantizer ratios sweeper / AIMET (activations per tensor, weights per channel)."""
    acts = {}
    for t in ws.graph.activations:
        a = aimet["activations"].get(t)
        enc = table.act_encoding(t, prec)
        if a is None or enc is None:
            acts[t] = {"aimet": a is not None, "sweeper": enc is not None}
            continue
        acts[t] = {"bw": enc.bitwidth, "scale_sweeper": float(enc.scale[0]), "scale_aimet": a["scale"][0],
                   "scale_ratio": float(enc.scale[0]) / a["scale"][0],
                   "offset_sweeper": int(enc.offset[0]), "offset_aimet": a["offset"][0]}
    weights = {}
    for w in ws.graph.weight_quantizers:
        a = aimet["params"].get(w)
        if a is None:
            weights[w] = {"aimet": False}
            continue
        ratio = table.weight(w, prec.weight_bits).scale.astype(np.float64) / np.asarray(a["scale"], np.float64)
        weights[w] = {"channels": int(ratio.size), "scale_ratio_min": float(ratio.min()),
                      "scale_ratio_max": float(ratio.max())}
    return {"activations": acts, "weights": weights}


def sweeper_side(precisions: list[str], aimet: dict[str, Any]) -> dict[str, Any]:
    from _common import mnist_workspace

    from sweeper.quant.precision import Precision

    ws = mnist_workspace()
    out: dict[str, Any] = {"fp32_metric": ws.fp32_metric}
    for name in precisions:
        prec = Precision.parse(name)
        tables = sweeper_tables(ws, prec)
        out[name] = {
            "metrics": {k: metric(ws, t, name) for k, t in tables.items()},
            "encodings": {k: compare_encodings(ws, tables[k], prec, aimet["precisions"][name])
                          for k in ("sweeper", "+weight-aware")},
        }
        log(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in out[name]["metrics"].items()))
    ws.close()
    return out


def _fmt(x: Any) -> str:
    return f"{x * 100:6.2f}" if isinstance(x, float) else "  n/a "


def report(precisions: list[str], aimet: dict[str, Any], sw: dict[str, Any]) -> None:
    lines = [f"aimet-onnx {aimet['aimet_onnx_version']}, onnxruntime {aimet['onnxruntime_version']}; "
             f"FP32 top-1 {sw['fp32_metric'] * 100:.2f} %", "",
             "top-1 %   | AIMET sim | AIMET QDQ int32 bias | sweeper | +weight-aware | +weight-aware, float bias"
             " | sweeper - AIMET sim"]
    for name in precisions:
        a, m = aimet["precisions"][name], sw[name]["metrics"]
        lines.append(f"{name:9} |  {_fmt(a['metric_sim'])}   |       {_fmt(a['metric_qdq_int32_bias'])}        |"
                     f" {_fmt(m['sweeper'])}  |    {_fmt(m['+weight-aware'])}     |"
                     f"          {_fmt(m['+weight-aware, float bias'])}           |"
                     f" {(m['sweeper'] - a['metric_sim']) * 100:+.2f}")
    for name in precisions:
        for variant in ("sweeper", "+weight-aware"):
            enc = sw[name]["encodings"][variant]
            lines += ["", f"{name} [{variant}] activation scale ratio sweeper/AIMET (offset sweeper, AIMET):"]
            for t, e in enc["activations"].items():
                if "scale_ratio" in e:
                    lines.append(f"  {t:45} {e['scale_ratio']:.5f}  ({e['offset_sweeper']}, {e['offset_aimet']})")
                else:
                    lines.append(f"  {t:45} quantized: sweeper {e['sweeper']}, aimet {e['aimet']}")
            if variant == "sweeper":
                lines.append(f"{name} weight scale ratio sweeper/AIMET per channel (min..max):")
                for w, e in enc["weights"].items():
                    lines.append(f"  {w:45} {e.get('scale_ratio_min', float('nan')):.5f}.."
                                 f"{e.get('scale_ratio_max', float('nan')):.5f}")
    lines += ["", "like for like (same bias representation), points:"]
    for name in precisions:
        a, m = aimet["precisions"][name], sw[name]["metrics"]
        q = a["metric_qdq_int32_bias"]
        int32 = f"{(m['sweeper'] - q) * 100:+.2f}" if isinstance(q, float) else "n/a (AIMET cannot export)"
        lines.append(f"  {name}: sweeper - AIMET QDQ int32 bias {int32}; sweeper +weight-aware, float bias - AIMET"
                     f" sim {(m['+weight-aware, float bias'] - a['metric_sim']) * 100:+.2f}")
    if "w4a4" in precisions:
        gap = abs(sw["w4a4"]["metrics"]["sweeper"] - aimet["precisions"]["w4a4"]["metric_sim"]) * 100
        lines += ["", f"w4a4 |sweeper - AIMET sim| = {gap:.2f} points; target <= {TARGET_POINTS}: "
                      + ("MET" if gap <= TARGET_POINTS else "NOT MET")
                      + " (AIMET's sim keeps biases float; sweeper stores them as int32)"]
    print("\n".join(lines), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precisions", default="w8a8,w4a8,w4a4,w2a8")
    ap.add_argument("--aimet-python", help="the AIMET venv's python (default: /work/aimet-venv, created if missing)")
    ap.add_argument("--keep", help="keep the inputs and both sides' outputs in this dir")
    ap.add_argument("--json", action="store_true", help="also print everything as one JSON line")
    args = ap.parse_args()
    os.chdir(REPO)
    from amp_vs_aimet import ensure_aimet_python, prepare_inputs

    precisions = args.precisions.split(",")
    py = ensure_aimet_python(args.aimet_python)
    with tempfile.TemporaryDirectory(prefix="aimet_parity_") as tmp:
        workdir = Path(args.keep).resolve() if args.keep else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        model, data = prepare_inputs(workdir)
        aimet = run_aimet(py, model, data, workdir, args.precisions)
        sw = sweeper_side(precisions, aimet)
        if args.keep:
            (workdir / "parity.json").write_text(json.dumps({"aimet": aimet, "sweeper": sw}, indent=1))
    report(precisions, aimet, sw)
    if args.json:
        print(json.dumps({"aimet": {k: {m: v[m] for m in ("metric_sim", "metric_qdq_float_bias",
                                                           "metric_qdq_int32_bias")}
                                    for k, v in aimet["precisions"].items()},
                          "sweeper": {k: sw[k]["metrics"] for k in precisions}}), flush=True)


if __name__ == "__main__":
    main()
