"""Sweeper's AMP against aimet-onnx's ``choose_mixed_precision`` on the same problem, side by side in one run.

    .venv/bin/python bench/amp_vs_aimet.py [--workers 2] [--aimet-python /work/aimet-venv/bin/python]
                                           [--keep DIR] [--skip-sweeper] [--json]

The problem: the MNIST example (``experiments/mnist_cnn.yaml``), candidates w2a8, w4a8, w8a8, w8a16, fp16,
allowed drop 0.005 of top-1 (absolute), calibration on images 0-255, top-1 on images 256-1796 in batches of 256.
Both sides get the same FP32 ONNX (exported and prepared by sweeper's own intake) and the same data.

Targets (issue): wall time sweeper / aimet <= 0.33 with 2 sweeper workers; BOPs of the accepted profiles
sweeper / aimet <= 1.0 (BOPs = MACs x weight bits x activation bits, fp16 = 16, relative to uniform w8a8).

AIMET runs in its own venv, outside the repo, never in sweeper's (aimet-onnx is not a sweeper dependency). This
script creates it when it is missing (``--aimet-python`` names another interpreter, which is then used as is)::

    python3 -m venv /work/aimet-venv
    /work/aimet-venv/bin/pip install torch==2.13.0
    /work/aimet-venv/bin/pip install aimet-onnx scikit-learn scipy pillow torch==2.13.0 torchvision==0.28.0

(aimet-onnx pulls onnx2torch, which pulls torchvision; without the two pins pip upgrades torch to the newest
CUDA build to match the newest torchvision. Nothing here imports torchvision. Measured with aimet-onnx 2.42.0,
onnxruntime 1.32.0, torch 2.13.0+cpu.) The AIMET side is ``bench/aimet_side.py``, run as a subprocess with
that interpreter on files in a temp dir; it prints one JSON line.

Timings: aimet = the ``choose_mixed_precision`` call alone (its sim setup and the interpreter start are
reported apart); sweeper = the whole ``python -m sweeper amp ...`` command from the outside (interpreter, export,
calibration, Ray start-up, search, writing results) and the search alone (``search_seconds`` of
``amp/results.json``). Both run with one ORT/BLAS thread per process (sweeper: per worker). The two sides run
one after the other, never at once; the load average before each is printed since a busy 2-core machine
skews either.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_AIMET_VENV = Path("/work/aimet-venv")
AIMET_INSTALL = [
    ["pip", "install", "torch==2.13.0"],
    ["pip", "install", "aimet-onnx", "scikit-learn", "scipy", "pillow", "torch==2.13.0", "torchvision==0.28.0"],
]
EXPERIMENT = "experiments/mnist_cnn.yaml"
CANDIDATES = "w2a8,w4a8,w8a8,w8a16,fp16"
MAX_DROP = 0.005
WALL_TARGET = 0.33
BOPS_TARGET = 1.0
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def log(msg: str) -> None:
    print(f"[amp_vs_aimet] {msg}", file=sys.stderr, flush=True)


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def ensure_aimet_python(given: str | None) -> Path:
    """The AIMET interpreter: ``given`` as is, or the default venv (created and filled when missing)."""
    if given:
        py = Path(given)
        if not py.exists():
            raise SystemExit(f"--aimet-python {py} does not exist")
        return py
    py = DEFAULT_AIMET_VENV / "bin" / "python"
    if py.exists() and _imports_aimet(py):
        return py
    if REPO in DEFAULT_AIMET_VENV.resolve().parents:
        raise SystemExit(f"refusing to create the AIMET venv inside the repo ({DEFAULT_AIMET_VENV})")
    log(f"creating the AIMET venv at {DEFAULT_AIMET_VENV} (a few minutes)")
    if not py.exists():
        subprocess.run(["python3", "-m", "venv", str(DEFAULT_AIMET_VENV)], check=True)
    for cmd in AIMET_INSTALL:
        subprocess.run([str(DEFAULT_AIMET_VENV / "bin" / cmd[0]), *cmd[1:]], check=True)
    if not _imports_aimet(py):
        raise SystemExit(f"{py} still cannot import aimet_onnx")
    return py


def _imports_aimet(py: Path) -> bool:
    probe = subprocess.run([str(py), "-c", "import aimet_onnx.mixed_precision"], capture_output=True,
                           env={**os.environ, **ONE_THREAD})
    return probe.returncode == 0


def prepare_inputs(workdir: Path) -> tuple[Path, Path]:
    """The FP32 model as sweeper prepares it, and the calibration / evaluation data, as files."""
    import numpy as np
    import onnx

    from sweeper.examples import mnist
    from sweeper.model.intake import export_torch, prepare_model

    model = prepare_model(export_torch("sweeper.examples.mnist:make_model", workdir / "exported.onnx"))
    model_path = workdir / "model.onnx"
    onnx.save(model, str(model_path))
    calib, evaluation = mnist.calibration_data(), mnist.evaluation_data()
    data_path = workdir / "data.npz"
    np.savez(data_path, input=calib["input"], eval_input=evaluation["input"], eval_labels=evaluation["labels"])
    return model_path, data_path


def run_aimet(py: Path, model: Path, data: Path, workdir: Path) -> dict:
    cmd = [str(py), str(REPO / "bench" / "aimet_side.py"), "--model", str(model), "--data", str(data),
           "--results-dir", str(workdir / "aimet_results"), "--candidates", CANDIDATES,
           "--max-drop", str(MAX_DROP), "--batch-size", "256"]
    log(f"aimet side (load average {loadavg()}): {' '.join(cmd)}")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ONE_THREAD}, cwd=workdir)
    command_s = time.perf_counter() - t0
    (workdir / "aimet_side.stderr").write_text(proc.stderr)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"aimet side failed (exit {proc.returncode}); its stderr is above")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    res = json.loads(lines[-1])
    res["command_s"] = round(command_s, 3)
    return res


def run_sweeper(workers: int, workdir: Path) -> dict:
    out = workdir / "sweeper_out"
    cmd = [sys.executable, "-m", "sweeper", "amp", EXPERIMENT, "--algorithm", "greedy", "--candidates", CANDIDATES,
           "--max-drop", str(MAX_DROP), "--workers", str(workers), "--no-tracking", "--fresh", "--output", str(out)]
    log(f"sweeper side (load average {loadavg()}): {' '.join(cmd)}")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    command_s = time.perf_counter() - t0
    (workdir / "sweeper.stdout").write_text(proc.stdout)
    (workdir / "sweeper.stderr").write_text(proc.stderr)
    results = out / "amp" / "results.json"
    if proc.returncode != 0 or not results.exists():
        sys.stderr.write(proc.stderr[-4000:])
        return {"error": f"`sweeper amp` exited {proc.returncode}"
                         + ("" if results.exists() else f", no {results.relative_to(workdir)}"),
                "command_s": round(command_s, 3)}
    doc = json.loads(results.read_text())
    doc["command_s"] = round(command_s, 3)
    return doc


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b in (None, 0) else a / b


def _met(value: float | None, target: float) -> str:
    return "n/a" if value is None else ("MET" if value <= target else "NOT MET")


def report(aimet: dict, sweeper: dict | None, workers: int) -> dict:
    a_wall = aimet["wall_s"]
    a_bops = aimet["bops_ratio_vs_w8a8"]
    lines = [
        f"AIMET  (aimet-onnx {aimet['aimet_onnx_version']}, onnxruntime {aimet['onnxruntime_version']}, "
        f"torch {aimet['torch_version']}, 1 thread)",
        f"  choose_mixed_precision wall {a_wall:.2f} s  (sim setup {aimet['setup_s']:.2f} s, "
        f"whole subprocess {aimet['command_s']:.2f} s)",
        f"  evaluations {aimet['evaluations']} ({aimet['evaluations_phase1']} phase 1 + "
        f"{aimet['evaluations_phase2']} phase 2)",
        f"  accepted: top-1 {aimet['metric'] * 100:.2f} % (FP32 {aimet['fp32_metric'] * 100:.2f} %), "
        f"BOPs {a_bops:.3f}x w8a8 ({aimet['bops_ratio_vs_w8a8_aimet_accounting']:.3f}x in AIMET's own "
        f"accounting, float operands x sqrt(1.5))",
        "  layers: " + ", ".join(f"{k} {v['precision']}" for k, v in aimet["layers"].items()),
    ]
    summary: dict = {"aimet": {k: aimet[k] for k in (
        "wall_s", "setup_s", "command_s", "evaluations", "evaluations_phase1", "evaluations_phase2", "metric",
        "fp32_metric", "bops_ratio_vs_w8a8", "bops_ratio_vs_w8a8_aimet_accounting", "aimet_onnx_version")}}
    summary["aimet"]["layers"] = {k: v["precision"] for k, v in aimet["layers"].items()}
    if sweeper is None:
        lines.append("SWEEPER: skipped (--skip-sweeper)")
    elif "error" in sweeper:
        lines.append(f"SWEEPER: did not run: {sweeper['error']} after {sweeper['command_s']:.1f} s "
                     "(is `sweeper amp` there yet? its stderr is above)")
        summary["sweeper"] = sweeper
    else:
        acc = sweeper["accepted"]
        s_cmd, s_search = sweeper["command_s"], sweeper.get("search_seconds")
        s_bops = acc.get("bops_ratio")
        wall_cmd, wall_search = _ratio(s_cmd, a_wall), _ratio(s_search, a_wall)
        bops = _ratio(s_bops, a_bops)
        bops_aimet_acc = _ratio(s_bops, aimet["bops_ratio_vs_w8a8_aimet_accounting"])
        fp32 = acc["metric"] + acc["drop"] if acc.get("drop") is not None else None
        lines += [
            f"SWEEPER ({workers} workers, 1 thread each)",
            f"  whole command wall {s_cmd:.2f} s, AMP search {s_search:.2f} s" if s_search is not None
            else f"  whole command wall {s_cmd:.2f} s (no search_seconds in results.json)",
            f"  evaluations {sweeper.get('evaluations')}",
            f"  accepted {acc.get('name')}: top-1 {acc['metric'] * 100:.2f} % (drop {acc.get('drop', float('nan')) * 100:.2f} "
            f"points), BOPs {s_bops:.3f}x w8a8",
            "  assignment: " + ", ".join(f"{g} {p}" for g, p in (acc.get("assignment") or {}).items()),
            "SWEEPER / AIMET",
            f"  wall, whole command / AMP call: {wall_cmd:.3f}   target <= {WALL_TARGET}: {_met(wall_cmd, WALL_TARGET)}",
            f"  wall, search only / AMP call:   {wall_search:.3f}   target <= {WALL_TARGET}: "
            f"{_met(wall_search, WALL_TARGET)}" if wall_search is not None else "  wall, search only: n/a",
            f"  BOPs of the accepted profiles:  {bops:.3f}   target <= {BOPS_TARGET}: {_met(bops, BOPS_TARGET)}"
            f"   (vs AIMET's own accounting {bops_aimet_acc:.3f})",
            f"  metrics: sweeper {acc['metric'] * 100:.2f} %, aimet {aimet['metric'] * 100:.2f} %"
            f"; evaluations: sweeper {sweeper.get('evaluations')}, aimet {aimet['evaluations']}",
        ]
        if fp32 is not None and abs(fp32 - aimet["fp32_metric"]) > 1e-6:
            lines.append(f"  NOTE: FP32 baselines differ (sweeper {fp32:.4f}, aimet {aimet['fp32_metric']:.4f})")
        summary["sweeper"] = {"command_s": s_cmd, "search_seconds": s_search, "evaluations": sweeper.get("evaluations"),
                              "metric": acc["metric"], "drop": acc.get("drop"), "bops_ratio": s_bops,
                              "name": acc.get("name"), "assignment": acc.get("assignment")}
        summary["ratios"] = {"wall_command": wall_cmd, "wall_search": wall_search, "bops": bops,
                             "bops_vs_aimet_accounting": bops_aimet_acc}
        summary["targets_met"] = {"wall_command": wall_cmd is not None and wall_cmd <= WALL_TARGET,
                                  "wall_search": wall_search is not None and wall_search <= WALL_TARGET,
                                  "bops": bops is not None and bops <= BOPS_TARGET}
    print("\n".join(lines), flush=True)
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2, help="sweeper's workers (target is stated for 2)")
    ap.add_argument("--aimet-python", help="the AIMET venv's python (default: /work/aimet-venv, created if missing)")
    ap.add_argument("--keep", help="keep the inputs, AIMET's results and sweeper's output in this dir")
    ap.add_argument("--skip-sweeper", action="store_true", help="run the AIMET side only")
    ap.add_argument("--json", action="store_true", help="also print the summary as one JSON line")
    args = ap.parse_args()
    os.chdir(REPO)
    py = ensure_aimet_python(args.aimet_python)
    with tempfile.TemporaryDirectory(prefix="amp_vs_aimet_") as tmp:
        workdir = Path(args.keep).resolve() if args.keep else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        log(f"preparing the model and data in {workdir}")
        model, data = prepare_inputs(workdir)
        aimet = run_aimet(py, model, data, workdir)
        sweeper = None if args.skip_sweeper else run_sweeper(args.workers, workdir)
        summary = report(aimet, sweeper, args.workers)
        if args.json:
            print(json.dumps(summary), flush=True)
    if sweeper is not None and "error" in sweeper:
        sys.exit(1)


if __name__ == "__main__":
    main()
