"""Sweeper's AdaRound against aimet-onnx's ``apply_adaround`` on the MNIST example, side by side in one run.

    .venv/bin/python bench/adaround_vs_aimet.py [--precisions w2a8,w4a8] [--iterations 1000] [--long]
                                               [--aimet-python PY] [--keep DIR] [--json]

The problem: the MNIST example (``experiments/mnist_cnn.yaml``), uniform w2a8 and w4a8, AdaRound on the 256
calibration images (0-255, AIMET in its batches of 32), top-1 on images 256-1796. Both sides get the same
prepared FP32 ONNX and the same data (``bench/amp_vs_aimet.py``'s ``prepare_inputs``). ``--long`` adds 5000
iterations.

AIMET runs in its own venv (``/work/aimet-venv``, created by ``amp_vs_aimet.py``'s helper when missing), this
same file run with ``--aimet-side`` (it then imports neither sweeper nor anything outside the standard
library before the AIMET venv's numpy/onnx/aimet): a default ``QuantizationSimModel`` (min-max, per-channel
weights, ``param_type=int<w>``, ``activation_type=int<a>``), ``compute_encodings`` on the calibration
images, top-1 (before), ``apply_adaround(sim, batches, num_iterations)`` (timed: ``wall_s``), then
``compute_encodings`` again (activations with the new weights; AdaRound froze the weight encodings) and
top-1 (after; ``metric_after_without_recalibration``: before that second ``compute_encodings``, the activation
encodings of the nearest weights, which is what sweeper keeps).

Sweeper's side is the command a user runs, ``python -m sweeper adaround ... --pool local --workers 1
--no-tracking --fresh``: its ``results.json`` gives both metrics, what was kept and ``seconds`` (the AdaRound
optimisation: activations collected and every layer optimised, the same scope as ``apply_adaround``); the
whole command's wall time is reported too. One thread on both sides (ORT, PyTorch, BLAS); the two run one
after the other, with the load average printed before each (the machine is shared).

Targets (issue 11): top-1 >= AIMET's - 0.2 points at w2a8; sweeper seconds / AIMET seconds <= 1.0 with one
worker; never below nearest rounding (the kept metric >= the nearest one).
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
EXPERIMENT = "experiments/mnist_cnn.yaml"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
METRIC_MARGIN = 0.002  # top-1 >= AIMET's - 0.2 points
TIME_TARGET = 1.0


def log(msg: str) -> None:
    print(f"[adaround_vs_aimet] {msg}", file=sys.stderr, flush=True)


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


# -- the AIMET side (runs in the AIMET venv) ------------------------------------------------------------
def aimet_side(args: argparse.Namespace) -> None:
    """``--aimet-side``: one JSON line with AIMET's metrics before and after AdaRound and its wall time."""
    import logging
    import re
    from importlib.metadata import version

    import numpy as np
    import onnx
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    from aimet_onnx import apply_adaround
    from aimet_onnx.common.utils import AimetLogger
    from aimet_onnx.quantsim import QuantizationSimModel

    for area in AimetLogger.LogAreas:
        AimetLogger.set_area_logger_level(area, logging.ERROR)
    data = np.load(args.data)
    calib = np.ascontiguousarray(data["input"], dtype=np.float32)
    x_eval, y_eval = np.ascontiguousarray(data["eval_input"], dtype=np.float32), np.asarray(data["eval_labels"])
    name = onnx.load(args.model).graph.input[0].name

    def top1(session) -> float:  # noqa: ANN001
        hits = sum(int((session.run(None, {name: x_eval[i:i + 256]})[0].argmax(1) == y_eval[i:i + 256]).sum())
                   for i in range(0, len(x_eval), 256))
        return hits / len(x_eval)

    def forward_pass(session) -> None:  # noqa: ANN001
        for i in range(0, len(calib), 256):
            session.run(None, {name: calib[i:i + 256]})

    m = re.fullmatch(r"w(\d+)a(\d+)", args.precision)
    assert m, args.precision
    sim = QuantizationSimModel(onnx.load(args.model), param_type=f"int{m.group(1)}",
                               activation_type=f"int{m.group(2)}", quant_scheme="min_max",
                               session_options_kwargs={"intra_op_num_threads": 1, "inter_op_num_threads": 1})
    sim.compute_encodings(forward_pass)
    before = top1(sim.session)
    batches = [{name: calib[i:i + 32]} for i in range(0, len(calib), 32)]
    t0 = time.perf_counter()
    apply_adaround(sim, batches, num_iterations=args.iterations)
    wall = time.perf_counter() - t0
    as_left = top1(sim.session)  # AdaRounded weights, activation encodings of the nearest weights
    sim.compute_encodings(forward_pass)
    print(json.dumps({"precision": args.precision, "iterations": args.iterations, "metric_before": before,
                      "metric_after": top1(sim.session), "metric_after_without_recalibration": as_left,
                      "wall_s": round(wall, 3),
                      "aimet_onnx_version": version("aimet-onnx"), "torch_version": version("torch")}), flush=True)


# -- the driver (runs in sweeper's venv) ----------------------------------------------------------------
def run_aimet(py: Path, model: Path, data: Path, precision: str, iterations: int, workdir: Path) -> dict:
    cmd = [str(py), str(Path(__file__).resolve()), "--aimet-side", "--model", str(model), "--data", str(data),
           "--precision", precision, "--iterations", str(iterations)]
    log(f"aimet {precision} x{iterations} (load average {loadavg()})")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ONE_THREAD}, cwd=workdir)
    (workdir / f"aimet_{precision}_{iterations}.stderr").write_text(proc.stderr)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"aimet side failed (exit {proc.returncode}); its stderr is above")
    res = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
    res["command_s"] = round(time.perf_counter() - t0, 3)
    return res


def run_sweeper(precision: str, iterations: int, workdir: Path) -> dict:
    out = workdir / f"sweeper_{precision}_{iterations}"
    cmd = [sys.executable, "-m", "sweeper", "adaround", EXPERIMENT, "--precision", precision, "--iterations",
           str(iterations), "--pool", "local", "--workers", "1", "--no-tracking", "--fresh", "--output", str(out)]
    log(f"sweeper {precision} x{iterations} (load average {loadavg()})")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, **ONE_THREAD})
    command_s = time.perf_counter() - t0
    (workdir / f"sweeper_{precision}_{iterations}.stderr").write_text(proc.stderr)
    results = out / "adaround" / "results.json"
    if proc.returncode != 0 or not results.exists():
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"`sweeper adaround` exited {proc.returncode}; its stderr is above")
    doc = json.loads(results.read_text())
    return {k: doc[k] for k in ("metric_before", "metric_after", "kept", "metric", "seconds")} | {
        "command_s": round(command_s, 3)}


def compare(a: dict, s: dict, precision: str, iterations: int) -> dict:
    """One row of the comparison, with the targets."""
    ratio = s["seconds"] / a["wall_s"] if a["wall_s"] else None
    row = {"precision": precision, "iterations": iterations, "aimet": a, "sweeper": s, "time_ratio": ratio,
           "never_below_nearest": s["metric"] >= s["metric_before"]}
    if precision == "w2a8":
        row["metric_target_met"] = s["metric"] >= a["metric_after"] - METRIC_MARGIN
    row["time_target_met"] = ratio is not None and ratio <= TIME_TARGET
    print(f"{precision} x{iterations}: AIMET {a['metric_before'] * 100:.2f} -> {a['metric_after'] * 100:.2f} % "
          f"({a['metric_after_without_recalibration'] * 100:.2f} % before re-calibrating activations) in "
          f"{a['wall_s']:.1f} s | sweeper {s['metric_before'] * 100:.2f} -> {s['metric_after'] * 100:.2f} % "
          f"(kept {s['kept']}: {s['metric'] * 100:.2f} %) in {s['seconds']:.1f} s (command {s['command_s']:.1f} s)"
          f" | time ratio {ratio:.2f}" + (f" | metric target {'MET' if row['metric_target_met'] else 'NOT MET'}"
                                          if "metric_target_met" in row else ""), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precisions", default="w2a8,w4a8")
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--long", action="store_true", help="also 5000 iterations")
    ap.add_argument("--aimet-python", help="the AIMET venv's python (default: /work/aimet-venv, created if missing)")
    ap.add_argument("--keep", help="keep the inputs and both sides' outputs in this dir")
    ap.add_argument("--json", action="store_true", help="also print the rows as one JSON line")
    ap.add_argument("--aimet-side", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--precision", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.aimet_side:
        aimet_side(args)
        return
    os.environ.update(ONE_THREAD)
    os.chdir(REPO)
    sys.path.insert(0, str(REPO / "bench"))
    from amp_vs_aimet import ensure_aimet_python, prepare_inputs

    py = ensure_aimet_python(args.aimet_python)
    rows = []
    with tempfile.TemporaryDirectory(prefix="adaround_vs_aimet_") as tmp:
        workdir = Path(args.keep).resolve() if args.keep else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        model, data = prepare_inputs(workdir)
        for iterations in [args.iterations] + ([5000] if args.long and args.iterations != 5000 else []):
            for precision in args.precisions.split(","):
                a = run_aimet(py, model, data, precision, iterations, workdir)
                s = run_sweeper(precision, iterations, workdir)
                rows.append(compare(a, s, precision, iterations))
    if args.json:
        print(json.dumps(rows), flush=True)


if __name__ == "__main__":
    main()
