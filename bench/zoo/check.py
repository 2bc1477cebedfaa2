"""Check the model zoo: build every model (or those named), run the FP32 model with ONNX Runtime on its
evaluation data, print a table (name, opset, nodes, inputs, FP32 metric, build and FP32 evaluation seconds);
then, per model, run ``sweeper.Session(exp, tracking=False, pool="local", workers=1).baseline()`` with the
candidates w8a8, w8a16, w16a16 and fp16 and print ``completed`` (with the candidates' metrics) or the one-line
error: exception type, message, and the innermost sweeper frame.

Each model runs in a child process (a crash or a hang in one does not stop the others; ``--timeout`` per
model). Run from the repository root::

    nice -n 10 .venv/bin/python bench/zoo/check.py [NAME ...] [--no-baseline] [--cache DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CANDIDATES = ("w8a8", "w8a16", "w16a16", "fp16")
ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1",
       "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _vi(v) -> str:  # noqa: ANN001 - onnx ValueInfoProto
    import onnx

    t = v.type.tensor_type
    dims = ",".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else "?"
    return f"{v.name}:{dtype}[{dims}]"


def _count_nodes(graph) -> int:  # noqa: ANN001 - onnx GraphProto
    n = 0
    for node in graph.node:
        n += 1
        for attr in node.attribute:
            if attr.g.node:
                n += _count_nodes(attr.g)
            for g in attr.graphs:
                n += _count_nodes(g)
    return n


def _model_proto(model):  # noqa: ANN001, ANN202
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    if callable(model):
        model = model()
        if isinstance(model, onnx.ModelProto):
            return model
    return onnx.load(str(model), load_external_data=False)


def _fp32_metric(spec: dict, proto) -> float:  # noqa: ANN001
    import numpy as np

    from bench.zoo._util import ort_runner

    run = ort_runner(proto)
    metric, data = spec["metric"], spec.get("evaluation", spec["calibration"])
    if callable(metric):
        return float(metric(run, data))
    if metric in ("cosine", "sqnr"):
        return 1.0 if metric == "cosine" else 100.0
    names = [i.name for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    bs = spec.get("batch_size", 64)
    out_idx = 0
    if spec.get("metric_output"):
        out_idx = [o.name for o in proto.graph.output].index(spec["metric_output"])
    if isinstance(data, (list, tuple)):  # feeds layout: labels per feed
        hits = [np.argmax(run({k: feed[k] for k in names})[out_idx], -1).reshape(-1) == np.reshape(feed["labels"], -1)
                for feed in data]
        return float(np.mean(np.concatenate(hits)))
    n = len(data["labels"])
    preds = [np.argmax(run({k: data[k][s:s + bs] if np.ndim(data[k]) else data[k] for k in names})[out_idx], -1)
             for s in range(0, n, bs)]
    return float(np.mean(np.concatenate(preds).reshape(-1) == np.asarray(data["labels"]).reshape(-1)))


def _innermost_sweeper_frame(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    sweeper_dir = str(ROOT / "sweeper")
    ours = [f for f in frames if f.filename.startswith(sweeper_dir)]
    if not ours:
        return "no sweeper frame"
    f = ours[-1]
    return f"{os.path.relpath(f.filename, ROOT)}:{f.lineno} in {f.name}"


def check_one(name: str, cache: Path | None, baseline: bool, workdir: Path) -> dict:
    """Build, FP32-evaluate and (optionally) baseline one model; a JSON-able dict of the results."""
    import bench.zoo as zoo

    entry = zoo.get(name)
    res: dict = {"name": name, "source": entry.source, "arch": entry.arch}
    t0 = time.perf_counter()
    try:
        spec = entry.spec(cache)
        res["build_s"] = time.perf_counter() - t0
        proto = _model_proto(spec["model"])
        res["opset"] = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        res["domains"] = sorted({o.domain for o in proto.opset_import if o.domain not in ("", "ai.onnx")})
        res["nodes"] = _count_nodes(proto.graph)
        inits = {t.name for t in proto.graph.initializer}
        res["inputs"] = [_vi(v) for v in proto.graph.input if v.name not in inits]
        res["outputs"] = len(proto.graph.output)
        res["mb"] = proto.ByteSize() / 1e6
        t1 = time.perf_counter()
        res["fp32"] = _fp32_metric(spec, proto)
        res["fp32_s"] = time.perf_counter() - t1
    except Exception as exc:  # noqa: BLE001 - reported, never raised: the zoo's own failure
        res["build_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        res["trace"] = "".join(traceback.format_exception(exc))[-3000:]
        return res
    if not baseline:
        return res
    import sweeper

    t2 = time.perf_counter()
    try:
        args = {k: v for k, v in spec.items() if k != "candidates"}
        exp = sweeper.experiment(name, **args, candidates=list(CANDIDATES), output=str(workdir / name))
        with sweeper.Session(exp, tracking=False, pool="local", workers=1) as s:
            rep = s.baseline()
        res["baseline"] = "completed"
        res["rows"] = {r.name: (None if r.metric is None else round(float(r.metric), 4)) for r in rep.rows}
        res["chosen"] = str(rep.chosen)
    except BaseException as exc:  # noqa: BLE001 - every failure is the data the lead needs
        msg = str(exc).replace("\n", " ")
        res["baseline"] = "failed"
        res["error"] = f"{type(exc).__name__}: {msg[:400]} [{_innermost_sweeper_frame(exc)}]"
        res["trace"] = "".join(traceback.format_exception(exc))[-4000:]
    res["baseline_s"] = time.perf_counter() - t2
    return res


def _child(argv: list[str]) -> None:
    name, cache, baseline, workdir = argv[0], argv[1] or None, argv[2] == "1", Path(argv[3])
    res = check_one(name, Path(cache) if cache else None, baseline, workdir)
    print("ZOO-RESULT " + json.dumps(res, default=str), flush=True)


def _run_child(name: str, args: argparse.Namespace, workdir: Path) -> dict:
    env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, args.cache or "",
           "0" if args.no_baseline else "1", str(workdir)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"name": name, "build_error": f"timed out after {args.timeout} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("ZOO-RESULT "):
            return json.loads(line[len("ZOO-RESULT "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"name": name, "build_error": f"child exited {proc.returncode}: {' | '.join(tail)[:400]}"}


def _tree_state() -> str:
    """The commit and whether sweeper/ has uncommitted changes (the check runs on the working tree)."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "sweeper"],
                               capture_output=True, text=True, timeout=10).stdout.split("\n")
        changed = [line[3:] for line in dirty if line.strip()]
        return f"{head}" + (f" + uncommitted changes in {', '.join(changed)}" if changed else " (sweeper/ clean)")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _fmt(v, spec: str = ".4f") -> str:  # noqa: ANN001
    return "-" if v is None else format(v, spec)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2:])
        return 0
    import bench.zoo as zoo

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="zoo models (default: all)")
    ap.add_argument("--no-baseline", action="store_true", help="build and FP32-evaluate only")
    ap.add_argument("--cache", default=None, help="cache folder (default ~/.cache/sweeper/zoo)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per model (build + baseline)")
    ap.add_argument("--out", default=None, help="also write the report to this file")
    args = ap.parse_args()
    names = args.names or [m.name for m in zoo.ZOO]
    unknown = [n for n in names if n not in {m.name for m in zoo.ZOO}]
    if unknown:
        ap.error(f"unknown zoo model(s): {', '.join(unknown)}; known: {', '.join(m.name for m in zoo.ZOO)}")
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    results = []
    t_all = time.perf_counter()
    state_before = _tree_state()
    with tempfile.TemporaryDirectory(prefix="zoo_check_") as tmp:
        for name in names:
            t = time.perf_counter()
            res = _run_child(name, args, Path(tmp))
            res["wall_s"] = time.perf_counter() - t
            results.append(res)
            state = res.get("baseline", "built" if "fp32" in res else "BUILD FAILED")
            print(f"# {name}: {state} in {res['wall_s']:.1f} s", file=sys.stderr, flush=True)
    say(f"zoo check: {len(results)} models, candidates {', '.join(CANDIDATES)}, pool local x1, "
        f"{time.perf_counter() - t_all:.0f} s in all")
    state_after = _tree_state()
    say(f"sweeper at {state_before}" + ("" if state_after == state_before else f"; at the end: {state_after}"))
    say()
    head = f"{'name':<22} {'source':<12} {'opset':>5} {'nodes':>6} {'MB':>6} {'FP32':>8} {'build_s':>7} {'fp32_s':>6}  inputs"
    say(head)
    say("-" * len(head))
    for r in results:
        if "build_error" in r:
            say(f"{r['name']:<22} BUILD FAILED: {r['build_error']}")
            continue
        dom = f" +{','.join(r['domains'])}" if r.get("domains") else ""
        say(f"{r['name']:<22} {r.get('source', ''):<12} {_fmt(r.get('opset'), 'd'):>5} {r['nodes']:>6} "
            f"{r['mb']:>6.2f} {_fmt(r['fp32']):>8} {r['build_s']:>7.2f} {r['fp32_s']:>6.2f}  "
            f"{' '.join(r['inputs'])}{dom}")
    if not args.no_baseline:
        say()
        say("baseline (w8a8, w8a16, w16a16, fp16):")
        for r in results:
            if "build_error" in r:
                continue
            if r.get("baseline") == "completed":
                rows = ", ".join(f"{k} {_fmt(v)}" for k, v in r["rows"].items())
                say(f"  {r['name']:<22} completed in {r['baseline_s']:.1f} s: {rows}; chosen {r['chosen']}")
            else:
                say(f"  {r['name']:<22} FAILED in {r.get('baseline_s', 0):.1f} s: {r.get('error')}")
        ok = sum(r.get("baseline") == "completed" for r in results)
        say()
        say(f"{ok} completed, {len(results) - ok} failed or not built")
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
        traces = Path(args.out).with_suffix(".traces.json")
        failed = {r["name"]: r.get("trace") for r in results if r.get("trace")}
        if failed:
            traces.write_text(json.dumps(failed, indent=1))
        else:
            traces.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
