"""Step 1: baseline precision. Simulate FP32 and every candidate, find the lowest-cost one that meets the
target, and read the pattern the way the workflow does."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sweeper.pipeline import Workspace
from sweeper.quant.precision import Precision
from sweeper.quant.profile import Profile
from sweeper.search.evaluate import Evaluated
from sweeper.search.step import Batch, Step, StepContext, StepOutput, run_step
from sweeper.tracking.tracker import Tracker


@dataclass
class BaselineReport:
    fp32_metric: float
    rows: list[Evaluated]
    chosen: str | None
    interpretation: str
    output: Path


def interpret(ok: dict[str, bool], chosen: str | None = None) -> str:
    """The workflow's reading of which precisions pass, led by what was found: the cheapest candidate that
    meets the target (``chosen``; by default the one with the fewest BOPs per MAC, then the fewest weight bits),
    then the cheaper candidates that do not."""
    passing = [Precision.parse(n) for n, v in ok.items() if v]
    if not passing:
        return "no candidate meets the target: relax max_drop or use AdaRound/QAT."
    best = Precision.parse(chosen) if chosen else min(passing, key=lambda p: (p.bops_factor, p.weight_bits, p.is_float))
    failing = sorted((Precision.parse(n) for n, v in ok.items() if v is False), key=lambda p: (p.bops_factor, p.name))
    cheaper = [p.name for p in failing if p.bops_factor <= best.bops_factor]
    but = f" ({', '.join(cheaper)} {'does' if len(cheaper) == 1 else 'do'} not)" if cheaper else ""
    if not best.is_float and min(best.weight_bits, best.act_bits) < 8:
        return f"even {_low_bits(best)} pass: {best.name} meets the target{but}."
    if best.name == "w8a8":
        return f"w8a8 meets the target: the model quantizes well at 8 bits{but}."
    if best.name == "w8a16" and ok.get("w8a8") is False:
        return "w8a16 meets the target but w8a8 does not: activation-sensitive (keep 16-bit activations or mix)."
    if best.name == "w16a16" and ok.get("w8a16") is False:
        return "w16a16 meets the target but w8a16 does not: weight-sensitive (keep 16-bit weights or mix)."
    if best.is_float and all(p.is_float for p in passing):
        return f"only {best.name} meets the target{but}: layer-sensitive (a few layers need float; try LiteMP / AMP)."
    return f"{best.name} is the cheapest candidate that meets the target{but}."


def _low_bits(p: Precision) -> str:
    """'4-bit weights', '4-bit activations (with 8-bit weights)', '4-bit weights and 4-bit activations'."""
    low = [f"{b}-bit {what}" for b, what in ((p.weight_bits, "weights"), (p.act_bits, "activations")) if b < 8]
    if len(low) == 2:
        return " and ".join(low)
    if p.weight_bits < 8:
        return low[0] if p.act_bits == 8 else f"{low[0]} (with {p.act_bits}-bit activations)"
    return f"{low[0]} (with {p.weight_bits}-bit weights)"


class BaselineStep(Step):
    """Step 1 as a :class:`~sweeper.search.step.Step`: one batch, every candidate uniformly."""

    name = "baseline"

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        groups = [g.name for g in ws.graph.groups]
        self.profiles = {p.name: Profile.uniform(groups, p) for p in ws.exp.candidates}
        self.results: dict[str, Evaluated] = {}
        self._asked = False

    def propose(self) -> Batch | None:
        if self._asked:
            return None
        self._asked = True
        return Batch(self.profiles, early=True)  # a candidate that cannot meet the target stops early

    def observe(self, results: dict[str, Evaluated], profiles: dict[str, Profile]) -> None:
        self.results.update(results)

    def finish(self, ctx: StepContext) -> StepOutput:
        ws, exp = self.ws, self.ws.exp
        rows = sorted(self.results.values(), key=lambda r: (r.bops_ratio, r.size_mb, -r.metric))
        passing = [r for r in rows if r.meets_target]
        chosen = passing[0].name if passing else None
        interpretation = interpret({r.name: r.meets_target for r in rows}, chosen)
        doc = {
            "experiment": exp.name, "metric": exp.metric, "fp32_metric": ws.fp32_metric, "max_drop": exp.max_drop,
            "chosen": chosen, "interpretation": interpretation,
            **ws.model_report(),
            "results": [r.to_json() for r in rows],
        }
        value = BaselineReport(ws.fp32_metric, rows, chosen, interpretation, ctx.final)
        return StepOutput(doc, {"fp32_metric": ws.fp32_metric}, value=value)


def run_baseline(ws: Workspace, pool, tracker: Tracker | None, fresh: bool = False) -> BaselineReport:  # noqa: ANN001
    """Step 1 on ``pool`` (see :class:`BaselineStep`)."""
    return run_step(BaselineStep(ws), ws, pool, tracker, fresh).value


def format_table(rep: BaselineReport, metric: str) -> str:
    metric = metric.rsplit(":", 1)[-1][:10]  # a user metric by its function name
    head = (f"{'precision':<10} {metric:>10} {'drop':>9} {'BOPs':>7} {'size MB':>8} {'est ms':>9} {'eval s':>7}"
            "  target")
    lines = [head, "-" * len(head),
             f"{'fp32':<10} {rep.fp32_metric:>10.4f} {0.0:>9.4f} {'-':>7} {'-':>8} {'-':>9} {'-':>7}"]
    for r in rep.rows:
        mark = "ok" if r.meets_target else "-"
        if r.stopped_early:  # its metric is over the samples it ran: it could not meet the target any more
            mark = f"-   (stopped after {r.samples_evaluated} samples: cannot meet the target)"
        if r.name == rep.chosen:
            mark = "ok  <= chosen (lowest cost meeting the target)"
        lines.append(f"{r.name:<10} {r.metric:>10.4f} {r.drop:>9.4f} {r.bops_ratio:>6.2f}x {r.size_mb:>8.3f} "
                     f"{r.est_latency_ms:>9.4f} {r.eval_seconds:>7.2f}  {mark}" + ("  (resumed)" if r.resumed else ""))
    return "\n".join(lines)


__all__ = ["BaselineReport", "BaselineStep", "format_table", "interpret", "run_baseline"]
