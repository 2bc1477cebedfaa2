"""Built-in metrics on small arrays with known answers, user metrics, and check_data's messages."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import TensorProto, helper

from sweeper.errors import SweeperError
from sweeper.eval import (
    Evaluator,
    check_data,
    input_specs_from_onnx,
    load_data,
    make_evaluator,
    reference_outputs,
)


def identity_run(calls: list[int] | None = None):
    """A 'model' whose output 0 is its input ``x`` (and output 1 twice that)."""

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        assert set(feeds) == {"x"}  # only the input names are fed, never labels
        if calls is not None:
            calls.append(len(feeds["x"]))
        return [feeds["x"].copy(), 2 * feeds["x"]]

    return run


def test_top1_known_fraction_in_batches() -> None:
    logits = np.array([[0.9, 0.1, 0.0], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [0.0, 0.0, 1.0]],
                      np.float32)
    data = {"x": logits, "labels": np.array([0, 1, 1, 0, 0])}  # 3 of 5 right
    calls: list[int] = []
    ev = make_evaluator("top1", True, 2, ["x"])
    assert ev.needs_labels and not ev.needs_reference and ev.higher_is_better
    assert ev.evaluate(identity_run(calls), data, None) == pytest.approx(0.6)
    assert calls == [2, 2, 1]


def test_reference_outputs_are_batched_and_concatenated() -> None:
    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    calls: list[int] = []
    ref = reference_outputs(identity_run(calls), {"x": x, "labels": np.zeros(5)}, ["x"], batch_size=2)
    assert calls == [2, 2, 1]
    assert len(ref) == 2
    np.testing.assert_array_equal(ref[0], x)
    np.testing.assert_array_equal(ref[1], 2 * x)
    ev = make_evaluator("cosine", True, 4, ["x"])
    np.testing.assert_array_equal(ev.reference_outputs(identity_run(), {"x": x})[0], x)


def test_cosine_known_value() -> None:
    ref = [np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]], np.float32)]
    x = np.array([[0.0, 1.0], [2.0, 2.0], [0.0, 0.0]], np.float32)  # cos 0, 1, and 1 for two zero vectors
    ev = make_evaluator("cosine", True, 2, ["x"])
    assert ev.needs_reference and not ev.needs_labels
    assert ev.evaluate(identity_run(), {"x": x}, ref) == pytest.approx(2 / 3)


def test_cosine_flattens_each_sample() -> None:
    x = np.array([[[1.0, 0.0], [0.0, 1.0]]], np.float32)  # one sample of shape (2, 2)
    ref = [np.array([[[1.0, 0.0], [0.0, 0.0]]], np.float32)]
    ev = make_evaluator("cosine", True, 8, ["x"])
    assert ev.evaluate(identity_run(), {"x": x}, ref) == pytest.approx(1 / math.sqrt(2))


def test_sqnr_known_value_and_cap() -> None:
    ref = [np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)]  # signal power 25
    x = np.array([[3.0, 3.0], [0.0, 0.0]], np.float32)  # noise power 1
    ev = make_evaluator("sqnr", True, 1, ["x"])
    assert ev.needs_reference
    assert ev.evaluate(identity_run(), {"x": x}, ref) == pytest.approx(10 * math.log10(25))
    assert ev.evaluate(identity_run(), {"x": ref[0].copy()}, ref) == 100.0


def test_reference_required_for_sqnr() -> None:
    with pytest.raises(ValueError, match="reference"):
        make_evaluator("sqnr", True, 1, ["x"]).evaluate(identity_run(), {"x": np.ones((1, 2))}, None)


def test_user_metric_called_with_run_and_data(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "eval_user_metrics.py").write_text(
        "import math\n"
        "def mean_out(run, data):\n    return float(run({'x': data['x']})[0].mean())\n"
        "def nan(run, data):\n    return math.nan\n"
        "def text(run, data):\n    return 'high'\n"
        "def boom(run, data):\n    raise RuntimeError('disk on fire')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    data = {"x": np.array([[1.0, 3.0]], np.float32)}
    ev = make_evaluator("eval_user_metrics:mean_out", False, 4, ["x"])
    assert isinstance(ev, Evaluator) and ev.higher_is_better is False
    assert not ev.needs_labels and not ev.needs_reference
    assert ev.evaluate(identity_run(), data, None) == 2.0
    for fn, phrase in [("nan", "returned nan: expected a finite number"),
                       ("text", "returned 'high': expected a finite number"),
                       ("boom", "failed: RuntimeError: disk on fire")]:
        with pytest.raises(SweeperError) as info:
            make_evaluator(f"eval_user_metrics:{fn}", True, 4, ["x"]).evaluate(identity_run(), data, None)
        assert f"eval_user_metrics:{fn}(run, data)" in info.value.message and phrase in info.value.message


# ------------------------------------------------------------------------------------------ check_data

INPUTS = {"x": ((None, 1, 4), np.dtype(np.float32)), "mask": (("batch", 4), np.dtype(np.int64))}


def good() -> dict[str, np.ndarray]:
    return {"x": np.zeros((3, 1, 4), np.float32), "mask": np.ones((3, 4), np.int64),
            "labels": np.array([0, 1, 2])}


def check_fails(data: dict[str, np.ndarray], needs_labels: bool = False) -> str:
    with pytest.raises(SweeperError) as info:
        check_data(data, INPUTS, needs_labels, "data.evaluation")
    assert info.value.where == "data.evaluation"
    return info.value.message


def test_check_data_accepts_dynamic_dims() -> None:
    assert check_data(good(), INPUTS, True, "data.evaluation") == 3


def test_check_data_missing_input() -> None:
    data = good()
    del data["mask"]
    msg = check_fails(data)
    assert "input 'mask' missing" in msg and "the data has keys labels, x" in msg


def test_check_data_wrong_shape() -> None:
    data = good() | {"x": np.zeros((3, 2, 4), np.float32)}
    msg = check_fails(data)
    assert "input 'x' has shape (3, 2, 4): the model expects (?, 1, 4)" in msg


def test_check_data_wrong_rank() -> None:
    msg = check_fails(good() | {"x": np.zeros((3, 4), np.float32)})
    assert "input 'x' has shape (3, 4)" in msg


def test_check_data_wrong_dtype() -> None:
    msg = check_fails(good() | {"x": np.zeros((3, 1, 4), np.float64)})
    assert "input 'x' has dtype float64: the model expects float32" in msg


def test_check_data_sample_counts_differ() -> None:
    msg = check_fails(good() | {"mask": np.ones((2, 4), np.int64)})
    assert "'mask' has 2 samples but 'x' has 3" in msg


def test_check_data_labels_missing() -> None:
    data = good()
    del data["labels"]
    check_data(data, INPUTS, False, "data.evaluation")  # fine when the metric needs no labels
    assert check_fails(data, needs_labels=True) == "labels missing: metric top1 needs a 'labels' array"


def test_input_specs_from_onnx_and_load_npz(tmp_path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor("w", TensorProto.FLOAT, [4], [0.0] * 4)],
    )
    specs = input_specs_from_onnx(helper.make_model(graph))
    assert specs == {"x": ((None, 4), np.dtype(np.float32))}
    np.savez(tmp_path / "d.npz", x=np.ones((2, 4), np.float32))
    data = load_data(str(tmp_path / "d.npz"), "data.calibration")
    assert check_data(data, specs, False, "data.calibration") == 2
    with pytest.raises(SweeperError, match="data file not found"):
        load_data(str(tmp_path / "none.npz"), "data.calibration")


def test_load_data_from_failing_loader(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "eval_user_loaders.py").write_text(
        "def broken():\n    raise OSError('no such dataset')\n"
        "def listy():\n    return [1, 2]\n"
        "def fine():\n    return {'x': [[1.0, 2.0]]}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SweeperError) as info:
        load_data("eval_user_loaders:broken", "data.calibration")
    assert info.value.where == "data.calibration"
    assert "eval_user_loaders:broken() failed: OSError: no such dataset" in info.value.message
    with pytest.raises(SweeperError, match="expected a non-empty dict"):
        load_data("eval_user_loaders:listy", "data.calibration")
    assert load_data("eval_user_loaders:fine", "data.calibration")["x"].shape == (1, 2)
