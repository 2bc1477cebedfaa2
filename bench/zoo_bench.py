"""The zoo benchmark: Steps 1-3 of sweeper's workflow on every zoo model (or those named), through the Python API,
with the figures the model-zoo issue sets targets for.

Per model, in a child process (a crash, a hang past ``--timeout`` or an error in one does not stop the others),
``sweeper.Session(exp, tracking=False, pool=..., workers=...)`` runs

1. ``baseline()`` at w8a8, w8a16, w16a16, fp16 (plus any other AMP candidate);
2. ``amp(candidates, algorithm="fast")``;
3. ``amp(candidates, algorithm="greedy")`` under a fresh output folder (``<model>/greedy``), where the exhaustive
   greedy's phase 1 (groups x candidates below the costliest) is at most ``--greedy-max`` (300) evaluations.

Every figure is read from the ``results.json`` files the steps write (under ``--work``/<model>), and printed as a
table per model: completed, or the one-line error (model, step, exception, innermost sweeper frame); Step-1
metrics and FP32, flagging inversions (a precision scoring more than 0.005 below a strictly lower one and
below FP32) and a w16a16 more than 0.005 below FP32; the simulated w8a8 evaluation and the driver's preparation in FP32
evaluations; AMP fast (full evaluations, search seconds and FP32 evaluations' worth, accepted BOPs ratio) against
greedy (fast cost / greedy cost); each worker's peak RSS per step. At the end: the completion rate, how many
models meet each target, and the list of flags. ``--out`` gets all figures as JSON (rewritten after each model).

AMP candidates: ``--candidates`` if given, else the ``candidates`` a model's builder sets (none does today), else
w8a8,w8a16,fp16 (the issue's). The AMP latency measurement is off (``--measure`` turns it on): it is not search
and does not change the search's figures. With ``--pool local`` the pool is one in-process worker whatever
``--workers`` says; ``--pool ray`` starts ``--workers`` Ray workers. Run from the repository root, one model at a
time by design (2-core machines: run it niced)::

    nice -n 19 .venv/bin/python bench/zoo_bench.py [NAME ...] [--workers 2] [--pool local|ray] [--timeout 900]
        [--candidates w8a8,w8a16,fp16] [--greedy-max 300] [--measure] [--cache DIR] [--work runs/zoo_bench]
        [--out runs/zoo_bench.json]
    .venv/bin/python bench/zoo_bench.py --report runs/zoo_bench.json   # the tables of a saved run again
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.zoo.check import ENV, _fmt, _innermost_sweeper_frame, _tree_state  # noqa: E402

STEP1 = ("w8a8", "w8a16", "w16a16", "fp16")  # Step 1's precisions in the table
DEFAULT_AMP = ("w8a8", "w8a16", "fp16")  # the issue's AMP candidates
TOL = 0.005  # metric tolerance of the inversion and w16a16 flags
# (higher precision, strictly lower precision): the first scoring more than TOL below the second is an inversion
INVERSIONS = (("w16a16", "w8a16"), ("w16a16", "w8a8"), ("w8a16", "w8a8"), ("fp16", "w8a8"))
TARGET_FAST_VS_GREEDY = 1.1  # fast's accepted cost <= 1.1x greedy's
TARGET_SEARCH_EVALS = 30.0  # fast's search <= 30 FP32 evaluations' worth
TARGET_PREP_EVALS = 5.0  # the driver's preparation <= 5 FP32 evaluations' worth
TAG = "ZOO-BENCH "  # prefix of the child's protocol lines on stdout


# ---- the child: one model's steps -----------------------------------------------------------------------------
def _say(kind: str, **fields: Any) -> None:
    """One protocol line to the parent (``ZOO-BENCH <kind> {json}``), flushed at once so a crash keeps it."""
    print(f"{TAG}{kind} {json.dumps(fields, default=str)}", flush=True)


def bench_one(name: str, opts: dict[str, Any]) -> None:
    """Run Steps 1-3 of zoo model ``name`` (``opts``: the parent's options) and announce each step's start, its
    results.json and any error on stdout. Figures are not computed here: the parent reads the files."""
    import bench.zoo as zoo
    import sweeper

    step = "build"
    try:
        entry = zoo.get(name)
        spec = entry.spec(opts["cache"])
        amp = opts["candidates"] or spec.get("candidates") or list(DEFAULT_AMP)
        amp = [str(getattr(c, "name", c)) for c in amp]
        step1 = list(dict.fromkeys([*STEP1, *amp]))
        out = Path(opts["work"]) / name
        step = "experiment"
        exp = sweeper.experiment(name, **{**spec, "candidates": step1, "output": str(out)})
        step = "prepare"
        with sweeper.Session(exp, tracking=False, pool=opts["pool"], workers=opts["workers"]) as s:
            groups = len(s.ws.graph.groups)
            phase1 = groups * (len(amp) - 1)
            _say("info", groups=groups, higher_is_better=exp.higher_is_better, step1=step1, amp=amp,
                 greedy_phase1=phase1, greedy=phase1 <= opts["greedy_max"], metric=str(s.ws.exp.metric),
                 max_drop=exp.max_drop)
            step = "baseline"
            _say("start", step=step)
            base = s.baseline(fresh=True)
            _say("done", step=step, results=str(s.exp.output / "baseline" / "results.json"))
            step = "export check"
            _say("export", **sim_vs_export(s.ws, base.rows))
            step = "fast"
            _say("start", step=step)
            rep = s.amp(candidates=amp, algorithm="fast", fresh=True, measure=opts["measure"])
            _say("done", step=step, results=str(rep.output / "results.json"))
            if phase1 <= opts["greedy_max"]:
                step = "greedy"
                s.set_output(out / "greedy")
                _say("start", step=step)
                rep = s.amp(candidates=amp, algorithm="greedy", fresh=True, measure=opts["measure"])
                _say("done", step=step, results=str(rep.output / "results.json"))
    except BaseException as exc:  # noqa: BLE001 - every failure is a figure of the benchmark
        msg = " ".join(str(exc).split())[:300]
        _say("error", step=step, error=f"{name}: {step} failed: {type(exc).__name__}: {msg} "
             f"[{_innermost_sweeper_frame(exc)}]",
             trace="".join(traceback.format_exception(exc))[-4000:])


def sim_vs_export(ws: Any, rows: list[Any]) -> dict[str, Any]:
    """Every Step-1 precision's exported QDQ model, evaluated under its reference session (the options it records)
    by the experiment's metric on the evaluation data, against the simulated metric: they must be equal, to the
    bit. A candidate whose evaluation stopped early is evaluated with the same target, so it stops at the same
    sample when the two agree. Returns ``{"checked": n, "mismatched": {precision: [sim, export]}}``."""
    from sweeper.model.session import reference_session

    data = ws.eval_set if ws.eval_set is not None else ws.evaluation_data()
    mismatched: dict[str, list[float]] = {}
    for r in rows:
        sess = reference_session(str(r.onnx), ws.threads)
        names = [o.name for o in sess.get_outputs()]
        out = ws.evaluator.outcome(lambda feeds, sess=sess, names=names: sess.run(names, dict(feeds)), data,
                                   ws.reference, ws.target if r.stopped_early else None)
        if out.metric != r.metric:
            mismatched[r.name] = [r.metric, out.metric]
    return {"checked": len(rows), "mismatched": mismatched}


def _child(argv: list[str]) -> None:
    """Entry of the child process: ``--child NAME OPTIONS_JSON``. A crash or a hang leaves a Python traceback on
    stderr (``faulthandler``: on a fatal signal, and on SIGUSR1, which the parent sends before killing a hang)."""
    import faulthandler

    faulthandler.enable()
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    bench_one(argv[0], json.loads(argv[1]))


# ---- the parent: one child per model --------------------------------------------------------------------------
def _frame_from_dump(stderr: str) -> str:
    """The innermost sweeper frame in a ``faulthandler`` dump (most recent call first): of the thread that
    crashed after a fatal error, else (a hang, dumped on SIGUSR1) of the main thread (the one running
    ``<module>``)."""
    blocks = [b for b in re.split(r"\n\s*\n", stderr) if re.match(r"\s*(Current thread|Thread) 0x", b)]
    if "Fatal Python error" in stderr:
        chosen = [b for b in blocks if b.lstrip().startswith("Current thread")]
    else:
        chosen = [b for b in blocks if " in <module>" in b]
    sweeper_dir = str(ROOT / "sweeper")
    for m in re.finditer(r'File "([^"]+)", line (\d+) in (\S+)', chosen[-1] if chosen else ""):
        if m.group(1).startswith(sweeper_dir):
            return f"{os.path.relpath(m.group(1), ROOT)}:{m.group(2)} in {m.group(3)}"
    return "no sweeper frame"


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Ask a hung child for its traceback (SIGUSR1), then kill its process group (the child was started in a
    session of its own: its Ray processes, if any, go with it). Returns what it wrote."""
    try:
        os.kill(proc.pid, signal.SIGUSR1)
        return proc.communicate(timeout=5)  # time to write the dump (it exits only if it was about to anyway)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return proc.communicate()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return proc.communicate()


def run_child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run :func:`bench_one` for ``name`` in a child process; its protocol lines as a dict: ``info``, ``done``
    (step -> results.json), ``started`` (steps started), ``error`` (one line) and ``trace``."""
    opts = {"cache": args.cache, "work": str(Path(args.work).resolve()), "pool": args.pool, "workers": args.workers,
            "candidates": args.candidates.split(",") if args.candidates else None,
            "greedy_max": args.greedy_max, "measure": args.measure}
    env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, json.dumps(opts)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                            start_new_session=True)
    timed_out = False
    try:
        stdout, stderr = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        stdout, stderr = _stop(proc)
    res: dict[str, Any] = {"name": name, "started": [], "done": {}}
    for line in stdout.splitlines():
        if not line.startswith(TAG):
            continue
        kind, _, payload = line[len(TAG):].partition(" ")
        msg = json.loads(payload)
        if kind == "info":
            res["info"] = msg
        elif kind == "export":
            res["export"] = msg
        elif kind == "start":
            res["started"].append(msg["step"])
        elif kind == "done":
            res["done"][msg["step"]] = msg["results"]
        elif kind == "error":
            res["error"], res["trace"] = msg["error"], msg["trace"]
    if "error" not in res and (timed_out or proc.returncode != 0):
        running = [s for s in res["started"] if s not in res["done"]]
        step = f"{running[-1]} failed" if running else \
            f"after {res['started'][-1]}" if res["started"] else "build/prepare failed"
        if timed_out:
            why = f"timed out after {args.timeout:g} s"
        elif proc.returncode < 0:
            why = f"killed by {signal.Signals(-proc.returncode).name}"
        else:
            why = f"child exited {proc.returncode}"
        # an exit status of the child's own: its last words; a signal (or the timeout) says enough by itself
        tail = "" if timed_out or proc.returncode < 0 else " | ".join(stderr.strip().splitlines()[-2:])[:200]
        res["error"] = f"{name}: {step}: {why}{': ' + tail if tail else ''} [{_frame_from_dump(stderr)}]"
        res["trace"] = stderr[-4000:]
    return res


# ---- figures from the results.json files ----------------------------------------------------------------------
def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _samples(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Samples a step's fresh evaluations pushed through the simulation (``used``: what early stopping left;
    ``full``: every fresh profile on all the data, as without it), from its result entries
    (``samples_evaluated``, ``stopped_early``, ``resumed``). None when the metric does not count samples."""
    fresh = [e for e in entries if not e.get("resumed")]
    whole = [e["samples_evaluated"] for e in entries if e.get("samples_evaluated") and not e.get("stopped_early")]
    if not whole:
        return None
    n = max(whole)
    used = sum(e.get("samples_evaluated") or n for e in fresh)
    return {"evaluations": len(fresh), "stopped": sum(bool(e.get("stopped_early")) for e in fresh),
            "used": used, "full": n * len(fresh), "per_evaluation": n}


def _amp_figures(doc: dict[str, Any], kind: str, fp32_s_fallback: float | None) -> dict[str, Any]:
    """One AMP results.json: evaluations, search seconds (and in FP32 evaluations of the same run's workers;
    the baseline's when this run started none), the accepted profile and its BOPs ratio, workers' peak RSS."""
    acc = doc.get("accepted") or {}
    fp32_s = doc.get("fp32_eval_seconds") or fp32_s_fallback
    search = doc.get("search_seconds")
    report = doc.get(kind) or {}
    return {"evaluations": report.get("full_evaluations", doc.get("evaluations")),
            "phase1_evaluations": report.get("phase1_evaluations"),
            "noise_seconds": report.get("noise_seconds"),
            "search_seconds": search, "fp32_eval_seconds": fp32_s, "search_fp32_evals": _ratio(search, fp32_s),
            "accepted": acc.get("profile"), "accepted_metric": acc.get("metric"),
            "accepted_bops": acc.get("bops_ratio"), "worker_peak_rss_mb": doc.get("worker_peak_rss_mb") or {},
            "samples": _samples(doc.get("all") or [])}


def figures(child: dict[str, Any]) -> dict[str, Any]:
    """A model's figures from its child's report and the results.json files of the steps that finished."""
    info = child.get("info", {})
    fig: dict[str, Any] = {"name": child["name"], "completed": "error" not in child, "error": child.get("error"),
                           "wall_s": child.get("wall_s"), "groups": info.get("groups"),
                           "metric": info.get("metric"), "max_drop": info.get("max_drop"),
                           "higher_is_better": info.get("higher_is_better", True),
                           "amp_candidates": info.get("amp"), "greedy_phase1": info.get("greedy_phase1"),
                           "greedy_planned": info.get("greedy"), "export": child.get("export")}
    docs: dict[str, Any] = {}
    for step, path in child["done"].items():
        try:
            docs[step] = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:  # a step said done but left no readable file: a finding too
            fig["completed"] = False
            fig["error"] = f"{child['name']}: {step}: unreadable {path}: {type(exc).__name__}: {exc}"
    base = docs.get("baseline")
    if base:
        rows = {r["name"]: r for r in base["results"]}
        fp32_s = base.get("fp32_eval_seconds")
        w8a8_s = rows.get("w8a8", {}).get("eval_seconds")
        prep = (base.get("prepare_seconds") or {}).get("total")
        prep_cpu = (base.get("prepare_seconds") or {}).get("cpu")  # the driver's CPU seconds (Ray starts beside)
        fig["step1"] = {"fp32": base["fp32_metric"], "chosen": base.get("chosen"),
                        **{k: r["metric"] for k, r in rows.items()}}
        fig["step1_samples"] = _samples(list(rows.values()))
        fig["step1_stopped"] = sorted(k for k, r in rows.items() if r.get("stopped_early"))
        fig["times"] = {"fp32_eval_seconds": fp32_s, "w8a8_eval_seconds": w8a8_s, "prepare_seconds": prep,
                        "w8a8_fp32_evals": _ratio(w8a8_s, fp32_s), "prepare_fp32_evals": _ratio(prep, fp32_s),
                        "prepare_cpu_seconds": prep_cpu, "prepare_cpu_fp32_evals": _ratio(prep_cpu, fp32_s),
                        "prepare_phases": base.get("prepare_seconds")}
        fig["rss"] = {"baseline": base.get("worker_peak_rss_mb") or {}}
    fp32_s = (base or {}).get("fp32_eval_seconds")
    for kind in ("fast", "greedy"):
        if kind in docs:
            fig[kind] = _amp_figures(docs[kind], kind, fp32_s)
            fig.setdefault("rss", {})[kind] = fig[kind].pop("worker_peak_rss_mb")
    if "fast" in fig and "greedy" in fig:
        fig["fast_vs_greedy"] = _ratio(fig["fast"]["accepted_bops"], fig["greedy"]["accepted_bops"])
    fig["flags"] = flags(fig)
    return fig


def flags(fig: dict[str, Any]) -> list[str]:
    """Inversions (a precision more than TOL below a strictly lower one, and more than TOL below FP32: a lower
    precision that scores above FP32 by chance is no defect of the higher one) and a w16a16 more than TOL
    below FP32."""
    s1 = fig.get("step1")
    if not s1:
        return []
    sign, below = (1.0, "below") if fig["higher_is_better"] else (-1.0, "worse than (lower is better)")
    out = []
    stopped = set(fig.get("step1_stopped") or [])  # a stopped precision's metric is partial: never the lower one
    for hi, lo in INVERSIONS:
        if (s1.get(hi) is not None and s1.get(lo) is not None and lo not in stopped and sign * (s1[lo] - s1[hi]) > TOL
                and sign * (s1["fp32"] - s1[hi]) > TOL):
            out.append(f"inversion: {hi} {s1[hi]:.4f} {below} {lo} {s1[lo]:.4f}")
    if s1.get("w16a16") is not None and sign * (s1["fp32"] - s1["w16a16"]) > TOL:
        out.append(f"w16a16 {s1['w16a16']:.4f} is {sign * (s1['fp32'] - s1['w16a16']):.4f} {below} FP32 {s1['fp32']:.4f}")
    return out


# ---- the report -----------------------------------------------------------------------------------------------
def _rss(rss: dict[str, dict[str, float]]) -> str:
    """Peak RSS per step and worker: ``baseline local-0 305 | fast ...``."""
    return " | ".join(f"{step} " + ", ".join(f"{w} {mb:.0f}" for w, mb in sorted(by.items()))
                      for step, by in rss.items() if by) or "-"


def _amp_line(a: dict[str, Any]) -> str:
    phase1 = f" (phase 1: {a['phase1_evaluations']})" if a.get("phase1_evaluations") is not None else ""
    acc = f"{a['accepted']} at {_fmt(a['accepted_bops'], '.3f')}x w8a8 BOPs, metric {_fmt(a['accepted_metric'])}" \
        if a.get("accepted") else "no passing profile"
    return (f"{a['evaluations']} evaluations{phase1}, search {_fmt(a['search_seconds'], '.3f')} s = "
            f"{_fmt(a['search_fp32_evals'], '.1f')} FP32 evaluations; accepted {acc}")


def model_table(fig: dict[str, Any]) -> list[str]:
    """The per-model table (one labelled row per figure)."""
    head = f"== {fig['name']}: completed in {_fmt(fig['wall_s'], '.1f')} s" if fig["completed"] else \
        f"== FAILED {fig['error']}"
    rows: list[tuple[str, str]] = []
    if fig.get("groups") is not None:
        rows.append(("model", f"{fig['groups']} groups, metric {fig['metric']}, max drop {fig['max_drop']}, "
                              f"AMP candidates {','.join(fig['amp_candidates'])}"))
    s1, t = fig.get("step1"), fig.get("times")
    if s1:
        rows.append(("Step 1", "  ".join(f"{p} {_fmt(s1.get(p))}" for p in STEP1)
                     + f"  | FP32 {_fmt(s1['fp32'])}  chosen {s1['chosen']}"))
        rows.append(("eval time", f"FP32 {_fmt(t['fp32_eval_seconds'], '.4f')} s; w8a8 "
                     f"{_fmt(t['w8a8_fp32_evals'], '.2f')}x FP32; preparation {_fmt(t['prepare_seconds'], '.3f')} s"
                     f" = {_fmt(t['prepare_fp32_evals'], '.1f')} FP32 evaluations (driver CPU "
                     f"{_fmt(t.get('prepare_cpu_seconds'), '.3f')} s = {_fmt(t.get('prepare_cpu_fp32_evals'), '.1f')})"))
    if fig.get("export"):
        ex = fig["export"]
        rows.append(("sim = export", f"{ex['checked'] - len(ex['mismatched'])} of {ex['checked']} Step-1 precisions"
                                     + (f"; differ: {ex['mismatched']}" if ex["mismatched"] else "")))
    used, full = _samples_total([fig])
    if full:
        rows.append(("samples", f"Step 1 + fast AMP {used} of {full} ({_fmt(used / full, '.2f')}x without early "
                                f"stopping); stopped in Step 1: {', '.join(fig.get('step1_stopped') or []) or 'none'}, "
                                f"in fast: {((fig.get('fast') or {}).get('samples') or {}).get('stopped', 0)}"))
    if "fast" in fig:
        rows.append(("AMP fast", _amp_line(fig["fast"])))
    if "greedy" in fig:
        rows.append(("AMP greedy", _amp_line(fig["greedy"])))
        rows.append(("fast/greedy", f"{_fmt(fig.get('fast_vs_greedy'), '.3f')} (target <= {TARGET_FAST_VS_GREEDY})"))
    elif fig.get("greedy_planned") is False:
        rows.append(("AMP greedy", f"not run: phase 1 would be {fig['greedy_phase1']} evaluations"))
    if fig.get("rss"):
        rows.append(("peak RSS MB", _rss(fig["rss"])))
    if s1:
        rows.append(("flags", "; ".join(fig["flags"]) or "none"))
    return [head] + [f"  {k:<12} {v}" for k, v in rows]


def _samples_total(figs: list[dict[str, Any]]) -> tuple[int, int]:
    """Samples of Step 1 and fast AMP over ``figs``: (used, as without early stopping); models whose metric
    does not count samples are left out."""
    used = full = 0
    for f in figs:
        for got in (f.get("step1_samples"), (f.get("fast") or {}).get("samples")):
            if got:
                used, full = used + got["used"], full + got["full"]
    return used, full


def summary(figs: list[dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """The end of the report: one row per model, completion rate, models meeting each target, every flag."""
    lines = ["", f"{'name':<20} {'status':<9} {'w16a16-FP32':>11} {'w8a8/FP32':>9} {'prep/FP32':>9} "
             f"{'fast ev':>7} {'search/FP32':>11} {'fast BOPs':>9} {'fast/greedy':>11} {'max RSS MB':>10}"]
    lines.append("-" * len(lines[-1]))
    for f in figs:
        s1, t, fa = f.get("step1") or {}, f.get("times") or {}, f.get("fast") or {}
        d16 = None if s1.get("w16a16") is None else s1["w16a16"] - s1["fp32"]
        peak = max((mb for by in (f.get("rss") or {}).values() for mb in by.values()), default=None)
        lines.append(f"{f['name']:<20} {'ok' if f['completed'] else 'FAILED':<9} {_fmt(d16, '+.4f'):>11} "
                     f"{_fmt(t.get('w8a8_fp32_evals'), '.2f'):>9} {_fmt(t.get('prepare_fp32_evals'), '.1f'):>9} "
                     f"{_fmt(fa.get('evaluations'), 'd'):>7} {_fmt(fa.get('search_fp32_evals'), '.1f'):>11} "
                     f"{_fmt(fa.get('accepted_bops'), '.3f'):>9} {_fmt(f.get('fast_vs_greedy'), '.3f'):>11} "
                     f"{_fmt(peak, '.0f'):>10}")
    done = sum(f["completed"] for f in figs)
    lines += ["", f"completed: {done}/{len(figs)} ({100 * done / max(len(figs), 1):.0f} %)"]
    used, full = _samples_total(figs)
    counted = sum(bool(f.get("step1_samples")) for f in figs)
    lines.append(f"samples of Step 1 + fast AMP: {used} of {full} without early stopping "
                 f"({_fmt(used / full if full else None, '.2f')}x) on the {counted} models whose metric counts samples")
    targets = {
        f"w16a16 within {TOL} of FP32": [(f["name"], not any(x.startswith("w16a16") for x in f["flags"]))
                                         for f in figs if (f.get("step1") or {}).get("w16a16") is not None],
        "sim = export (every Step-1 precision)": [(f["name"], not f["export"]["mismatched"])
                                                   for f in figs if f.get("export")],
        f"fast <= {TARGET_FAST_VS_GREEDY}x greedy BOPs": [(f["name"], f["fast_vs_greedy"] <= TARGET_FAST_VS_GREEDY)
                                                          for f in figs if f.get("fast_vs_greedy") is not None],
        f"fast search <= {TARGET_SEARCH_EVALS:g} FP32 evaluations": [
            (f["name"], f["fast"]["search_fp32_evals"] <= TARGET_SEARCH_EVALS)
            for f in figs if (f.get("fast") or {}).get("search_fp32_evals") is not None],
        f"preparation <= {TARGET_PREP_EVALS:g} FP32 evaluations": [
            (f["name"], f["times"]["prepare_fp32_evals"] <= TARGET_PREP_EVALS)
            for f in figs if (f.get("times") or {}).get("prepare_fp32_evals") is not None],
        "  the same, driver CPU seconds": [
            (f["name"], f["times"]["prepare_cpu_fp32_evals"] <= TARGET_PREP_EVALS)
            for f in figs if (f.get("times") or {}).get("prepare_cpu_fp32_evals") is not None],
    }
    lines.append("targets (models meeting it / models measured):")
    for label, got in targets.items():
        missed = [n for n, ok in got if not ok]
        lines.append(f"  {label:<40} {sum(ok for _, ok in got)}/{len(got)}"
                     + (f"  missed: {', '.join(missed)}" if missed else ""))
    all_flags = [f"{f['name']}: {x}" for f in figs for x in f["flags"]]
    lines.append(f"flags ({len(all_flags)}):" + ("" if all_flags else " none"))
    lines += [f"  {x}" for x in all_flags]
    failed = [f["error"] for f in figs if not f["completed"]]
    if failed:
        lines.append(f"failures ({len(failed)}):")
        lines += [f"  {x}" for x in failed]
    doc = {"completed": done, "models": len(figs), "flags": all_flags, "failures": failed,
           "targets": {k: {"met": sum(ok for _, ok in v), "measured": len(v), "missed": [n for n, ok in v if not ok]}
                       for k, v in targets.items()}}
    return lines, doc


def report(path: Path) -> int:
    """The per-model tables and the summary of a saved run (figures derived from the saved phases again, so a
    JSON written before a figure existed gets it where its inputs were saved)."""
    figs = json.loads(path.read_text())["models"]
    for fig in figs:
        t = fig.get("times")
        if t and t.get("prepare_cpu_seconds") is None:
            t["prepare_cpu_seconds"] = (t.get("prepare_phases") or {}).get("cpu")
            t["prepare_cpu_fp32_evals"] = _ratio(t["prepare_cpu_seconds"], t.get("fp32_eval_seconds"))
        print("\n".join(model_table(fig)))
    print("\n".join(summary(figs)[0]))
    return 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2:])
        return 0
    import bench.zoo as zoo

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="zoo models (default: all)")
    ap.add_argument("--workers", type=int, default=2, help="workers of the pool (default 2; ray only)")
    ap.add_argument("--pool", choices=("local", "ray"), default="local", help="worker pool (default local)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per model, all steps (default 900)")
    ap.add_argument("--candidates", default=None,
                    help="AMP candidates, comma-separated (default: the model's own, else w8a8,w8a16,fp16)")
    ap.add_argument("--greedy-max", type=int, default=300,
                    help="run the exhaustive greedy when its phase 1 is at most this many evaluations (default 300)")
    ap.add_argument("--measure", action="store_true", help="measure AMP's ONNX Runtime latencies (off by default)")
    ap.add_argument("--cache", default=None, help="zoo cache folder (default ~/.cache/sweeper/zoo)")
    ap.add_argument("--work", default="runs/zoo_bench",
                    help="steps' output folders, one per model, emptied first (default runs/zoo_bench)")
    ap.add_argument("--out", default="runs/zoo_bench.json", help="JSON of all figures (default runs/zoo_bench.json)")
    ap.add_argument("--report", default=None, metavar="JSON",
                    help="print the tables of an earlier run's JSON (--out) again, running nothing")
    args = ap.parse_args()
    if args.report:
        return report(Path(args.report))
    known = [m.name for m in zoo.ZOO]
    names = args.names or known
    unknown = [n for n in names if n not in known]
    if unknown:
        ap.error(f"unknown zoo model(s): {', '.join(unknown)}; known: {', '.join(known)}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    amp = args.candidates or f"the model's, else {','.join(DEFAULT_AMP)}"
    header = [f"zoo bench: {len(names)} model(s), pool {args.pool} x{args.workers if args.pool == 'ray' else 1}, "
              f"AMP candidates {amp}, greedy where its phase 1 <= {args.greedy_max} evaluations, "
              f"timeout {args.timeout:g} s per model",
              f"sweeper at {_tree_state()}", ""]
    print("\n".join(header), flush=True)
    figs: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    for name in names:
        shutil.rmtree(Path(args.work) / name, ignore_errors=True)  # no stale results.json from an earlier run
        t = time.perf_counter()
        child = run_child(name, args)
        child["wall_s"] = time.perf_counter() - t
        fig = figures(child)
        fig["trace"] = child.get("trace")
        figs.append(fig)
        print("\n".join(model_table(fig)), flush=True)
        print(f"# {name}: {'completed' if fig['completed'] else 'FAILED'} in {child['wall_s']:.1f} s",
              file=sys.stderr, flush=True)
        out.write_text(json.dumps({"options": vars(args), "models": figs}, indent=1, default=str))
    lines, doc = summary(figs)
    lines.append(f"\n{len(figs)} model(s) in {time.perf_counter() - t_all:.0f} s; figures in {out}")
    print("\n".join(lines), flush=True)
    out.write_text(json.dumps({"options": vars(args), "tree": header[1], "summary": doc, "models": figs},
                              indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
