"""The AIMET half of ``bench/amp_vs_aimet.py``: aimet-onnx's ``choose_mixed_precision`` on one AMP problem.

Runs INSIDE the separate AIMET venv (``/work/aimet-venv``, see ``amp_vs_aimet.py``), never in sweeper's:
it imports neither sweeper nor torchvision, and gets its inputs as files::

    /work/aimet-venv/bin/python bench/aimet_side.py --model model.onnx --data data.npz --results-dir DIR \
        [--candidates w2a8,w4a8,w8a8,w8a16,fp16] [--max-drop 0.005] [--batch-size 256] [--check-uniform]

``data.npz`` holds ``input`` (calibration, one forward pass over all of it computes encodings), ``eval_input``
and ``eval_labels`` (top-1 on them, in batches of ``--batch-size``, is the metric of both AMP phases).

The sim is ``QuantizationSimModel(model)`` with aimet-onnx's defaults (min-max, int8, the default config
``default_config_per_channel.json``: per-channel weights for Conv/Gemm, biases not quantized), ORT on one
thread. Timed: the ``choose_mixed_precision`` call alone (``wall_s``); the sim's construction and first
encodings are reported apart (``setup_s``). Evaluations are counted by wrapping both eval callbacks.

The accepted profile is read back from the sim's quantizers after AMP: for every Conv/Gemm node, the weight
bits are its weight quantizer's, the activation bits those of the nearest enabled quantizer on its data input
(AIMET leaves MaxPool / Reshape outputs unquantized, so that is the preceding Relu's; fp16 = 16; none = 32).
BOPs = sum of MACs x weight bits x activation bits, relative to the same at 8x8 (``bops_ratio_vs_w8a8``).
AIMET's quantizer groups keep weights and activations apart, so a layer can end up with fp16 weights and an
int8 input; it counts as 16 x 8 here. AIMET's own BitOps weigh each float operand as bits x sqrt(1.5); the
same profile under that accounting is ``bops_ratio_vs_w8a8_aimet_accounting`` (the "2.38x" of the issue's
reference run is that number: AIMET's pareto value 4.76 relative to its baseline candidate w4a8, x 32/64).

Prints exactly one JSON line on stdout (logs go to stderr):
``{"wall_s", "evaluations", "metric", "bops_ratio_vs_w8a8", "layers": {...}, "aimet_onnx_version", ...}``.

``--parity [--precisions w8a8,w4a8,w4a4,w2a8]`` (used by ``bench/aimet_parity.py``) runs no AMP: for each
uniform precision it builds a fresh default sim (``param_type=int<w>``, ``activation_type=int<a>``, min-max),
computes encodings on ``input``, and prints one JSON line with, per precision, the sim's top-1, the top-1 of
its QDQ export in plain ONNX Runtime (optimizations off) with float biases (AIMET's default export) and with
int32 biases (``export_int32_bias=True``), and every enabled quantizer's encodings (activations per tensor,
weights per channel: bitwidth, scale, offset, min, max).
"""

from __future__ import annotations

import os

# One thread everywhere, before numpy / onnxruntime / torch are imported.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from importlib.metadata import version  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402

# MACs per sample of the MNIST CNN's Conv/Gemm layers, in graph order (checked against the model's shapes).
MNIST_MACS = {"conv1": 225792, "conv2": 3612672, "conv3": 3612672, "fc1": 294912, "fc2": 2560}
SESSION_OPTIONS = {"intra_op_num_threads": 1, "inter_op_num_threads": 1}


def parse_candidate(name: str):  # noqa: ANN201 - returns AIMET's candidate tuple
    """``w4a8`` -> ((8, int), (4, int)); ``fp16`` -> ((16, float), (16, float)) (act first, as AIMET wants)."""
    from aimet_onnx.common.defs import QuantizationDataType as QDT

    if name == "fp16":
        return ((16, QDT.float), (16, QDT.float))
    m = re.fullmatch(r"w(\d+)a(\d+)", name)
    if not m:
        raise SystemExit(f"unknown candidate {name!r} (expected wNaM or fp16)")
    return ((int(m.group(2)), QDT.int), (int(m.group(1)), QDT.int))


def layer_macs(model: onnx.ModelProto) -> dict[str, int]:
    """MACs per sample of every Conv / Gemm node, from the (shape-inferred) model."""
    model = onnx.shape_inference.infer_shapes(model)
    shapes: dict[str, list[int]] = {}
    for vi in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    macs = {}
    for node in model.graph.node:
        if node.op_type == "Conv":
            w = inits[node.input[1]]  # (C_out, C_in/groups, kH, kW)
            out = shapes[node.output[0]][1:]  # (C_out, H, W)
            macs[node.name] = int(np.prod(out) * np.prod(w[1:]))
        elif node.op_type == "Gemm":
            w = inits[node.input[1]]
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            n_out, k = (w[0], w[1]) if trans_b else (w[1], w[0])
            macs[node.name] = int(n_out * k)
    return macs


def quantizer_bits(sim, tensor: str) -> tuple[int, str]:  # noqa: ANN001
    """(bits, dtype) a tensor is simulated at: its quantizer's, or 32/fp32 when it has none or it is off."""
    q = sim.qc_quantize_op_dict.get(tensor)
    if q is None or not q.enabled:
        return 32, "fp32"
    dtype = "float" if q.data_type.name == "float" else "int"
    return int(q.bitwidth), dtype


def act_bits(sim, model: onnx.ModelProto, tensor: str) -> tuple[int, str, str]:  # noqa: ANN001
    """(bits, dtype, quantizer) of a layer's data input. AIMET leaves the outputs of value-preserving ops
    (MaxPool, Reshape, ...) unquantized, so the tensor carries the grid of the nearest enabled quantizer
    upstream: walk back through single-data-input ops until one is found (fp32 at a Conv/Gemm or a graph input)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    seen = set()
    while tensor not in seen:
        seen.add(tensor)
        q = sim.qc_quantize_op_dict.get(tensor)
        if q is not None and q.enabled:
            bits, dtype = quantizer_bits(sim, tensor)
            return bits, dtype, tensor
        node = producers.get(tensor)
        if node is None or node.op_type in ("Conv", "Gemm", "MatMul") or not node.input:
            break
        tensor = node.input[0]
    return 32, "fp32", ""


def read_profile(sim, model: onnx.ModelProto, macs: dict[str, int], aliases: dict[str, str]) -> dict:  # noqa: ANN001
    import math

    layers = {}
    bops = ref = bops_aimet = 0.0
    fp_mult = math.sqrt(1.5)  # aimet_onnx.common.amp.utils.FLOATING_POINT_MULTIPLIER
    for node in model.graph.node:
        if node.name not in macs:
            continue
        w_bits, w_dtype = quantizer_bits(sim, node.input[1])
        a_bits, a_dtype, a_quantizer = act_bits(sim, model, node.input[0])
        name = aliases.get(node.name, node.name)
        w_s = f"fp{w_bits}" if w_dtype in ("float", "fp32") else str(w_bits)
        a_s = f"fp{a_bits}" if a_dtype in ("float", "fp32") else str(a_bits)
        precision = f"fp{w_bits}" if w_dtype == a_dtype == "float" and w_bits == a_bits else f"w{w_s}a{a_s}"
        layers[name] = {
            "node": node.name, "precision": precision, "weight_bits": w_bits, "weight_dtype": w_dtype,
            "act_bits": a_bits, "act_dtype": a_dtype, "act_quantizer": a_quantizer, "macs": macs[node.name],
        }
        bops += macs[node.name] * w_bits * a_bits
        ref += macs[node.name] * 8 * 8
        bops_aimet += (macs[node.name] * w_bits * (fp_mult if w_dtype == "float" else 1)
                       * a_bits * (fp_mult if a_dtype == "float" else 1))
    return {"layers": layers, "bops": bops, "bops_ratio_vs_w8a8": bops / ref,
            "bops_ratio_vs_w8a8_aimet_accounting": bops_aimet / ref}


class Counter:
    """An eval callback (session -> float) that counts its calls and keeps its scores."""

    def __init__(self, fn, phase: str) -> None:  # noqa: ANN001
        self.fn, self.phase, self.scores = fn, phase, []

    def __call__(self, session, args=None) -> float:  # noqa: ANN001
        score = float(self.fn(session))
        self.scores.append(score)
        print(f"[aimet_side] {self.phase} eval #{len(self.scores)}: {score:.4f}", file=sys.stderr, flush=True)
        return score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="FP32 ONNX model (prepared: BN folded, shapes inferred)")
    ap.add_argument("--data", required=True, help=".npz with input, eval_input, eval_labels")
    ap.add_argument("--results-dir", required=True, help="AIMET's results_dir (pareto list, plots, cache)")
    ap.add_argument("--candidates", default="w2a8,w4a8,w8a8,w8a16,fp16")
    ap.add_argument("--max-drop", type=float, default=0.005, help="allowed absolute top-1 drop (fraction)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--check-uniform", action="store_true",
                    help="also simulate w8a8, w4a8, w4a4, w2a8 uniformly (untimed) to compare with the reference")
    ap.add_argument("--verbose", action="store_true", help="AIMET's INFO logs on stderr")
    ap.add_argument("--parity", action="store_true",
                    help="no AMP: per-quantizer encodings and metrics of uniform precisions (bench/aimet_parity.py)")
    ap.add_argument("--precisions", default="w8a8,w4a8,w4a4,w2a8", help="with --parity: uniform wNaM precisions")
    args = ap.parse_args()
    if args.parity:
        parity_main(args)
        return
    t_process = time.perf_counter()

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    with contextlib.suppress(ImportError):
        import torch  # aimet-onnx imports it anyway; keep it on one thread too

        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
    from aimet_onnx.common.defs import CallbackFunc
    from aimet_onnx.common.utils import AimetLogger
    from aimet_onnx.mixed_precision import choose_mixed_precision
    from aimet_onnx.quantsim import QuantizationSimModel

    if not args.verbose:
        for area in AimetLogger.LogAreas:
            AimetLogger.set_area_logger_level(area, logging.WARNING)

    model = onnx.load(args.model)
    data = np.load(args.data)
    calib = np.ascontiguousarray(data["input"], dtype=np.float32)
    x_eval = np.ascontiguousarray(data["eval_input"], dtype=np.float32)
    y_eval = np.asarray(data["eval_labels"])
    input_name = model.graph.input[0].name

    macs = layer_macs(model)
    aliases = {}
    if list(macs.values()) == list(MNIST_MACS.values()):  # graph order: conv1, conv2, conv3, fc1, fc2
        aliases = dict(zip(macs, MNIST_MACS, strict=True))
    else:
        print(f"[aimet_side] not the MNIST CNN's MACs {MNIST_MACS}: {macs}", file=sys.stderr)

    def top1(session) -> float:  # noqa: ANN001
        correct = 0
        for i in range(0, len(x_eval), args.batch_size):
            logits = session.run(None, {input_name: x_eval[i:i + args.batch_size]})[0]
            correct += int((logits.argmax(axis=1) == y_eval[i:i + args.batch_size]).sum())
        return correct / len(x_eval)

    def forward_pass(session, calib_data) -> None:  # noqa: ANN001
        for i in range(0, len(calib_data), args.batch_size):
            session.run(None, {input_name: calib_data[i:i + args.batch_size]})

    t0 = time.perf_counter()
    sim = QuantizationSimModel(model, quant_scheme="min_max", session_options_kwargs=SESSION_OPTIONS)
    sim.compute_encodings(lambda session: forward_pass(session, calib))
    setup_s = time.perf_counter() - t0
    per_channel = sorted({bool(sim.qc_quantize_op_dict[p].quant_info.usePerChannelMode)
                          for p in sim.param_names if p in sim.qc_quantize_op_dict
                          and sim.qc_quantize_op_dict[p].enabled})

    phase1 = Counter(top1, "phase1")
    phase2 = Counter(top1, "phase2")
    candidates = [parse_candidate(c) for c in args.candidates.split(",")]
    Path(args.results_dir).mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    pareto = choose_mixed_precision(
        sim,
        candidates,
        CallbackFunc(phase1),
        CallbackFunc(phase2),
        args.max_drop,
        args.results_dir,
        True,  # clean_start
        CallbackFunc(forward_pass, calib),
    )
    wall_s = time.perf_counter() - t0

    profile = read_profile(sim, model, macs, aliases)
    metric_recheck = top1(sim.session)  # the sim as AMP left it: the accepted profile (not counted)
    fp32_metric = phase2.scores[0] if phase2.scores else None  # AIMET's first phase-2 eval is the FP32 baseline
    out = {
        "wall_s": round(wall_s, 3),
        "evaluations": len(phase1.scores) + len(phase2.scores),
        "evaluations_phase1": len(phase1.scores),
        "evaluations_phase2": len(phase2.scores),
        # AIMET's last phase-2 evaluation is the accepted profile's final score (_final_eval_score)
        "metric": phase2.scores[-1] if phase2.scores else metric_recheck,
        "metric_recheck": metric_recheck,
        "fp32_metric": fp32_metric,
        "bops_ratio_vs_w8a8": round(profile["bops_ratio_vs_w8a8"], 4),
        # AIMET's own BitOps weigh a float operand as bits * sqrt(1.5) (so fp16 x fp16 = 384, not 256); its
        # pareto list reports them relative to its baseline candidate. Same profile, AIMET's accounting:
        "bops_ratio_vs_w8a8_aimet_accounting": round(profile["bops_ratio_vs_w8a8_aimet_accounting"], 4),
        "layers": profile["layers"],
        "quantizers": {n: (f"{q.data_type.name}{q.bitwidth}" if q.enabled else "off")
                       for n, q in sim.qc_quantize_op_dict.items()},
        "aimet_pareto_relative_bitops": [round(float(p[0]), 4) for p in (pareto or [])],
        "setup_s": round(setup_s, 3),
        "weights_per_channel": per_channel,
        "candidates": args.candidates.split(","),
        "max_drop": args.max_drop,
        "aimet_onnx_version": version("aimet-onnx"),
        "onnxruntime_version": version("onnxruntime"),
        "torch_version": version("torch"),
    }
    if args.check_uniform:
        out["uniform_metrics"] = check_uniform(model, forward_pass, calib, top1, QuantizationSimModel)
    out["process_s"] = round(time.perf_counter() - t_process, 3)
    print(json.dumps(out), flush=True)


def check_uniform(model, forward_pass, calib, top1, QuantizationSimModel) -> dict[str, float]:  # noqa: ANN001, N803
    """Top-1 of uniform precisions with a fresh default sim each (the issue's reference numbers)."""
    res = {}
    for name, (w, a) in {"w8a8": (8, 8), "w4a8": (4, 8), "w4a4": (4, 4), "w2a8": (2, 8)}.items():
        sim = QuantizationSimModel(model, param_type=f"int{w}", activation_type=f"int{a}",
                                   quant_scheme="min_max", session_options_kwargs=SESSION_OPTIONS)
        sim.compute_encodings(lambda session: forward_pass(session, calib))
        res[name] = top1(sim.session)
    return res


def _quantizer_encodings(q) -> dict | None:  # noqa: ANN001 - an aimet_onnx QcQuantizeOp
    """An enabled quantizer's encodings as plain JSON (one entry per channel for per-channel weights)."""
    if not q.enabled:
        return None
    encs = q.get_encodings() or []
    return {"bw": int(q.bitwidth), "symmetric": bool(q.use_symmetric_encodings),
            "scale": [float(e.delta) for e in encs], "offset": [int(round(e.offset)) for e in encs],
            "min": [float(e.min) for e in encs], "max": [float(e.max) for e in encs]}


def _qdq_metric(sim, top1, int32_bias: bool) -> float | str:  # noqa: ANN001
    """Top-1 of the sim's QDQ export in plain ONNX Runtime (optimizations off), or why it cannot be exported."""
    import onnxruntime as ort

    try:
        qdq = sim.to_onnx_qdq(export_int32_bias=int32_bias, prequantize_constants=True)
    except Exception as exc:  # noqa: BLE001 - AIMET refuses e.g. 2-bit QDQ; that is a result, not a crash
        return f"not exported: {type(exc).__name__}: {str(exc)[:160]}"
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    return top1(ort.InferenceSession(qdq.SerializeToString(), so, providers=["CPUExecutionProvider"]))


def parity_main(args: argparse.Namespace) -> None:
    """``--parity``: encodings and metrics of uniform precisions, one JSON line on stdout."""
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    from aimet_onnx.common.utils import AimetLogger
    from aimet_onnx.quantsim import QuantizationSimModel

    if not args.verbose:
        for area in AimetLogger.LogAreas:
            AimetLogger.set_area_logger_level(area, logging.ERROR)
    data = np.load(args.data)
    calib = np.ascontiguousarray(data["input"], dtype=np.float32)
    x_eval = np.ascontiguousarray(data["eval_input"], dtype=np.float32)
    y_eval = np.asarray(data["eval_labels"])
    input_name = onnx.load(args.model).graph.input[0].name

    def top1(session) -> float:  # noqa: ANN001
        correct = 0
        for i in range(0, len(x_eval), args.batch_size):
            logits = session.run(None, {input_name: x_eval[i:i + args.batch_size]})[0]
            correct += int((logits.argmax(axis=1) == y_eval[i:i + args.batch_size]).sum())
        return correct / len(x_eval)

    def forward_pass(session) -> None:  # noqa: ANN001
        for i in range(0, len(calib), args.batch_size):
            session.run(None, {input_name: calib[i:i + args.batch_size]})

    out: dict = {"aimet_onnx_version": version("aimet-onnx"), "onnxruntime_version": version("onnxruntime"),
                 "precisions": {}}
    for name in args.precisions.split(","):
        m = re.fullmatch(r"w(\d+)a(\d+)", name)
        if not m:
            raise SystemExit(f"--precisions: {name!r} is not wNaM")
        sim = QuantizationSimModel(onnx.load(args.model), param_type=f"int{m.group(1)}",
                                   activation_type=f"int{m.group(2)}", quant_scheme="min_max",
                                   session_options_kwargs=SESSION_OPTIONS)
        sim.compute_encodings(forward_pass)
        qs = sim.qc_quantize_op_dict
        out["precisions"][name] = {
            "metric_sim": top1(sim.session),
            "metric_qdq_float_bias": _qdq_metric(sim, top1, int32_bias=False),
            "metric_qdq_int32_bias": _qdq_metric(sim, top1, int32_bias=True),
            "activations": {t: e for t in sim.activation_names if t in qs
                            and (e := _quantizer_encodings(qs[t])) is not None},
            "params": {p: e for p in sim.param_names if p in qs and (e := _quantizer_encodings(qs[p])) is not None},
        }
        print(f"[aimet_side] {name}: sim top-1 {out['precisions'][name]['metric_sim']:.4f}", file=sys.stderr)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
