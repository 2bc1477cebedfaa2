from __future__ import annotations

import copy
import html
import shutil
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


def test_preview_renders_in_headless_chromium(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if chromium is None:
        pytest.skip("no chromium")
    files = write_sensitivity_report(make_doc(7), tmp_path)
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1300,2000", files["html"].as_uri()], check=True, timeout=120,
                   capture_output=True)
    assert shot.read_bytes()[:8] == PNG_MAGIC
