"""``sweeper export EXP --encodings F.encodings --out m.onnx`` on encodings an earlier export wrote: the result
is that first export (same encodings document, same ONNX model, the same outputs bit for bit), even from an
experiment calibrated on other data, whose own encodings differ (so the equality comes from the file).

In process, no Ray, no MLflow: about a second."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from conftest import cnn_data, cnn_model, write_experiment
from onnx import numpy_helper

from sweeper.model.session import reference_session


def _cli(*args: str) -> None:
    from sweeper.cli import main

    assert main(list(args)) == 0


def _encodings(onnx_path: Path) -> dict[str, Any]:
    return json.loads(onnx_path.with_suffix(".encodings").read_text())


def _x_scale(doc: dict[str, Any], bits: int) -> float:
    return next(e["scale"][0] for e in doc["activation_encodings"] if e["name"] == "x" and e["bw"] == bits)


def _assert_same_model(a: Path, b: Path, feeds: dict[str, np.ndarray]) -> None:
    ma, mb = onnx.load(str(a)), onnx.load(str(b))
    assert [(n.op_type, list(n.input), list(n.output)) for n in ma.graph.node] == \
        [(n.op_type, list(n.input), list(n.output)) for n in mb.graph.node]
    ia = {i.name: numpy_helper.to_array(i) for i in ma.graph.initializer}
    ib = {i.name: numpy_helper.to_array(i) for i in mb.graph.initializer}
    assert set(ia) == set(ib)
    for name, arr in ia.items():
        assert arr.dtype == ib[name].dtype, name
        np.testing.assert_array_equal(arr, ib[name], err_msg=name)
    assert {p.key: p.value for p in ma.metadata_props} == {p.key: p.value for p in mb.metadata_props}
    out_a, out_b = reference_session(str(a), 1).run(None, feeds), reference_session(str(b), 1).run(None, feeds)
    for x, y in zip(out_a, out_b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_export_from_encodings_reproduces_the_first_export(tmp_path: Path) -> None:
    model = cnn_model()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    data_a = cnn_data()
    exp_a = write_experiment(tmp_path / "a", model, data_a, candidates="[w8a8, w4a8]")
    # the second experiment: the same model, calibrated on other data (its own encodings differ)
    exp_b = write_experiment(tmp_path / "b", model, {"x": cnn_data(seed=7)["x"] * 3.0},
                             candidates="[w8a8, w4a8]")

    # first exports: a uniform precision from the CLI, a mixed profile (16-bit, float16, 4-bit) from the API
    first_uniform = tmp_path / "a" / "w4a8.onnx"
    _cli("export", str(exp_a), "--precision", "w4a8", "--out", str(first_uniform))
    import sweeper
    from sweeper.quant.profile import Profile

    first_mixed = tmp_path / "a" / "mixed.onnx"
    with sweeper.Session(exp_a, tracking=False) as s:
        assert [g.name for g in s.ws.graph.groups] == ["conv1", "conv2", "fc"]
        s.export(Profile.make({"conv1": "w8a16", "conv2": "fp16", "fc": "w4a8"}), first_mixed)

    own = tmp_path / "b" / "own_w4a8.onnx"
    _cli("export", str(exp_b), "--precision", "w4a8", "--out", str(own))
    assert _x_scale(_encodings(own), 8) != _x_scale(_encodings(first_uniform), 8)  # b's calibration differs

    feeds = {"x": data_a["x"][:16]}
    for first in (first_uniform, first_mixed):
        again = tmp_path / "b" / f"again_{first.stem}.onnx"
        _cli("export", str(exp_b), "--encodings", str(first.with_suffix(".encodings")), "--out", str(again))
        assert again.is_file() and again.with_suffix(".encodings").is_file()
        assert _encodings(again) == _encodings(first), first.name
        _assert_same_model(first, again, feeds)
    mixed = _encodings(first_mixed)
    assert {e["bw"] for e in mixed["activation_encodings"] if e["dtype"] == "INT"} == {8, 16}
    assert any(e["dtype"] == "FLOAT" for e in mixed["param_encodings"])


def test_export_from_encodings_of_other_quantization_settings(tmp_path: Path) -> None:
    """Encodings written under ``act_symmetric: true`` and ``per_channel: false`` exported by an experiment
    with the defaults (asymmetric activations, per-channel weights): the file's encodings, not the experiment's."""
    model = cnn_model()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    data = cnn_data()
    exp_a = write_experiment(tmp_path / "a", model, data,
                             extra="calibration:\n  act_symmetric: true\n  per_channel: false\n")
    exp_b = write_experiment(tmp_path / "b", model, data)
    first = tmp_path / "a" / "w8a8.onnx"
    _cli("export", str(exp_a), "--precision", "w8a8", "--out", str(first))
    again = tmp_path / "b" / "again.onnx"
    _cli("export", str(exp_b), "--encodings", str(first.with_suffix(".encodings")), "--out", str(again))
    a, b = _encodings(first), _encodings(again)
    for section in ("activation_encodings", "param_encodings", "sweeper"):
        assert b[section] == a[section], section
    assert all(e["is_sym"] and len(e["scale"]) == 1 for e in b["activation_encodings"] + b["param_encodings"])
    _assert_same_model(first, again, {"x": data["x"][:16]})


def test_simulation_of_loaded_encodings_of_other_settings_equals_their_export(tmp_path: Path) -> None:
    import sweeper
    from sweeper.export.encodings_io import read_encodings
    from sweeper.sim.quantsim import QuantSim

    model, data = cnn_model(), cnn_data()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    exp_a = write_experiment(tmp_path / "a", model, data, extra="calibration:\n  act_symmetric: true\n")
    exp_b = write_experiment(tmp_path / "b", model, data)  # the defaults: asymmetric activations
    first = tmp_path / "a" / "w8a8.onnx"
    _cli("export", str(exp_a), "--precision", "w8a8", "--out", str(first))
    feeds = {"x": data["x"][:16]}
    with sweeper.Session(exp_b, tracking=False) as s:
        again = s.export(first.with_suffix(".encodings"), tmp_path / "b" / "again.onnx")
        profile = s.ws.table.load_aimet(read_encodings(first.with_suffix(".encodings")))
        sim = QuantSim(s.ws.graph, s.ws.table, threads=1, precisions=["w8a8"])
        sim.apply(profile)
        want = sim.run(feeds)
    got = reference_session(str(again), 1).run(None, feeds)
    _assert_same_model(first, again, feeds)  # the export is right: the first export
    for a, b in zip(want, got, strict=True):
        np.testing.assert_array_equal(a, b)
