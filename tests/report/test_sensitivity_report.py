from __future__ import annotations

import copy
import html
import json
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sweeper.report import shorten_names, write_sensitivity_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

CNN_NAMES = ["/conv_layers/conv_layers.0/Conv", "/conv_layers/conv_layers.3/Conv", "/fc/fc.0/Gemm",
             "/bert/encoder/layer.4/attention/self/MatMul_1", "/bert/encoder/layer.5/attention/self/MatMul_1",
             "/bert/encoder/layer.11/attention/output/dense/MatMul", "onnx::MatMul_<odd & name>"]


def _hist(rng: np.random.Generator, lo: float, hi: float, heavy: bool) -> dict[str, list[Any]]:
    x = rng.standard_t(2, 20000) if heavy else rng.standard_normal(20000)
    x = np.clip(lo + (x - x.min()) / (x.max() - x.min()) * (hi - lo), lo, hi)
    counts, edges = np.histogram(x, np.linspace(lo, hi, 65))
    return {"counts": [int(c) for c in counts], "edges": [float(e) for e in edges]}


def make_doc(n: int, seed: int = 0, names: list[str] | None = None) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    if names is None:
        names = CNN_NAMES if n == len(CNN_NAMES) else \
            [f"/bert/encoder/layer.{i // 6}/{['attention/self/query', 'attention/self/key', 'attention/self/value', 'attention/output/dense', 'intermediate/dense', 'output/dense'][i % 6]}/MatMul"
             for i in range(n)]
    fp32, base = 0.9403, 0.9322
    groups = []
    for i, name in enumerate(names):
        scale = 10.0 ** rng.uniform(-2, 1.5)  # ranges spanning orders of magnitude
        a_lo, a_hi = (-scale * rng.uniform(0.1, 1), scale) if i % 3 else (0.0, scale)
        groups.append({
            "name": name, "ops": [name, f"{name}_relu"], "macs": int(rng.integers(1e4, 1e8)),
            "enable_one": fp32 - abs(rng.normal(0.002, 0.003)) * (3 if i == 0 else 1),
            "disable_one": base + rng.normal(0.002, 0.002),
            "sqnr_db": float(rng.uniform(8, 45)) if i % 5 != 4 else None,
            "weights": [{"name": f"{name}.weight", "min": -rng.uniform(0.05, 0.8), "max": rng.uniform(0.05, 0.8)}]
            if i % 4 != 3 else [],
            "activations": [{"name": f"{name}_input", "min": a_lo, "max": a_hi, "sentinels": 128 if i == 3 else 0,
                             "hist": _hist(rng, a_lo, a_hi, heavy=i % 2 == 0)}],
        })
    higher = True
    groups.sort(key=lambda g: g["enable_one"])
    for r, g in enumerate(groups, 1):
        g["rank"] = r
    return {"experiment": "mnist_cnn", "metric": "top1", "higher_is_better": higher, "base": "w8a8",
            "fp32_metric": fp32, "target": {"max_drop": 0.005},
            "summary": {"fp32": fp32, "weights_only": 0.9355, "activations_only": 0.9390, "base": base},
            "interpretation": "Weights hurt more than activations: try w16 <or> AdaRound & friends.",
            "ranking": "enable_one", "groups": groups}


def _check(files: dict[str, Path], doc: dict[str, Any], plots: set[str]) -> str:
    assert set(files) == {"html", *plots}
    for name in plots:
        p = files[name]
        assert p.name == f"{name}.png" and p.is_file() and p.read_bytes()[:8] == PNG_MAGIC
    text = files["html"].read_text(encoding="utf-8")
    assert files["html"].name == "report.html"
    assert text.count("data:image/png;base64,") == len(plots)
    for g in doc["groups"]:
        assert html.escape(g["name"]) in text
    assert "<script" not in text.lower() and "http://" not in text and "https://" not in text
    return text


ALL = {"summary", "sensitivity", "sqnr", "ranges", "histograms"}


def test_seven_groups(tmp_path: Path) -> None:
    doc = make_doc(7)
    text = _check(write_sensitivity_report(doc, tmp_path), doc, ALL)
    assert "onnx::MatMul_&lt;odd &amp; name&gt;" in text and "<odd" not in text
    assert html.escape(doc["interpretation"]) in text
    assert "most sensitive of" not in text  # no truncation note with 7 groups


def test_many_groups_capped(tmp_path: Path) -> None:
    doc = make_doc(150, seed=1)
    text = _check(write_sensitivity_report(doc, tmp_path), doc, ALL)
    assert "40 most sensitive of 150" in text


def test_all_null_sqnr_skips_plot(tmp_path: Path) -> None:
    doc = make_doc(7)
    for g in doc["groups"]:
        g["sqnr_db"] = None
    files = write_sensitivity_report(doc, tmp_path)
    _check(files, doc, ALL - {"sqnr"})
    assert not (tmp_path / "sqnr.png").exists()


def test_lower_is_better_and_sparse_doc(tmp_path: Path) -> None:
    doc = make_doc(5)
    doc["higher_is_better"] = False
    for g in doc["groups"]:
        g["activations"] = []
        g["weights"] = []
    files = write_sensitivity_report(doc, tmp_path)
    _check(files, doc, {"summary", "sensitivity", "sqnr"})  # no ranges / histograms to show
    empty = write_sensitivity_report({**copy.deepcopy(doc), "groups": []}, tmp_path / "empty")
    assert set(empty) == {"html", "summary"}


def test_shorten_names_keeps_distinguishing_tail() -> None:
    names = ["/conv_layers/conv_layers.0/Conv", "/conv_layers/conv_layers.3/Conv",
             "/bert/encoder/layer.4/attention/self/MatMul_1", "/bert/encoder/layer.5/attention/self/MatMul_1",
             "/bert/encoder/layer.11/attention/output/dense/MatMul", "/bert/encoder/layer.10/attention/output/dense/MatMul",
             "fc2", "x" * 80]
    short = shorten_names(names, 36)
    assert shorten_names(names[4:5] + names[5:6])[0] == "layer.11/attention/output/dense/MatMul"
    assert short[:4] == ["conv_layers.0/Conv", "conv_layers.3/Conv", "layer.4/attention/self/MatMul_1",
                         "layer.5/attention/self/MatMul_1"]
    assert short[4].startswith("layer.11/") and short[4].endswith("/MatMul") and len(short[4]) <= 36
    assert short[6] == "fc2" and len(short[7]) == 36
    assert len(set(short)) == len(short)
    # an op suffix (MatMul_1) is no layer index: a unique tail still reaches back to the numbered component
    assert shorten_names(["/bert/encoder/layer.4/attention/self/MatMul_1", "/fc/Gemm"]) == \
        ["layer.4/attention/self/MatMul_1", "fc/Gemm"]


CHROMIUM = "/usr/bin/chromium"  # Debian's, which scripts/test.sh installs
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=10000"]
# appended to a copy of the report (which has no script of its own): once the page has loaded, what the browser
# made of it: each image's decoded size and mean RGB value (drawn on a canvas), and the table's group rows in order
PROBE = """<script>window.addEventListener("load", () => {
  const decoded = img => {
    const c = document.createElement("canvas");
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    if (!c.width || !c.height) return null;
    const ctx = c.getContext("2d");
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    let sum = 0;
    for (let k = 0; k < d.length; k += 4) sum += d[k] + d[k + 1] + d[k + 2];
    return sum / (d.length / 4 * 3);
  };
  const out = document.createElement("pre"); out.id = "probe";
  out.textContent = JSON.stringify({
    images: [...document.images].map(i => ({alt: i.alt, w: i.naturalWidth, h: i.naturalHeight, mean: decoded(i)})),
    rows: [...document.querySelectorAll("tr")].filter(r => r.querySelector("td.name"))
      .map(r => ({name: r.querySelector("td.name").textContent, bad: r.classList.contains("bad")}))});
  document.body.appendChild(out);
});</script>"""


def _chromium(profile: Path, *args: str) -> str:
    """Headless Chromium once (fresh profile), its stdout; it and its helpers are stopped by process group."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: scripts/test.sh installs Debian's chromium (apt-get install chromium)")
    out = profile.with_suffix(".out")
    with out.open("wb") as f:  # a file, not a pipe: helpers that outlive the browser would hold a pipe open
        proc = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                                stdout=f, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            proc.wait(timeout=120)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the renderer and other helpers share its group
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait(timeout=30)
    assert proc.returncode == 0, f"chromium exited with {proc.returncode}"
    return out.read_text(errors="replace")


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    """The report as Chromium shows it: every plot decodes to the size of its PNG, the table lists every
    group in rank order with the rows beyond the target shaded, and the screenshot is a page of many colours
    (a blank page, an error page or a broken or truncated image fails)."""
    from PIL import Image

    doc = make_doc(7)
    files = write_sensitivity_report(doc, tmp_path / "report")
    page = files["html"].read_text(encoding="utf-8")
    probe = tmp_path / "report" / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = _chromium(tmp_path / "profile-dom", "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, f"the page did not load (no probe output): {dom[:500]!r}"
    seen = json.loads(html.unescape(found.group(1)))
    assert [i["alt"] for i in seen["images"]] == ["summary", "sensitivity", "sqnr", "ranges", "histograms"]
    for img in seen["images"]:  # each plot decoded whole: the size and the mean colour of its PNG file
        with Image.open(files[img["alt"]]) as png:
            rgb = np.asarray(png.convert("RGB"), np.float64)
        assert (img["w"], img["h"]) == (rgb.shape[1], rgb.shape[0]), img
        assert img["mean"] == pytest.approx(rgb.mean(), abs=0.5), img
    ranked = sorted(doc["groups"], key=lambda g: g["rank"])
    max_drop = doc["target"]["max_drop"]
    assert [r["name"] for r in seen["rows"]] == [g["name"] for g in ranked]
    assert [r["bad"] for r in seen["rows"]] == [doc["fp32_metric"] - g["enable_one"] > max_drop for g in ranked]
    assert any(r["bad"] for r in seen["rows"]) and not all(r["bad"] for r in seen["rows"])

    shot = tmp_path / "shot.png"
    _chromium(tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1300,2000", files["html"].as_uri())
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.shape == (2000, 1300, 3)
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    ink = float(np.mean(np.any(pixels < 200, axis=-1)))  # share of pixels clearly darker than the background
    assert colours > 200 and pixels.std() > 20 and ink > 0.02, (colours, float(pixels.std()), ink)
