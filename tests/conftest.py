"""Shared fixtures: tiny onnx.helper graphs, calibrated and ready for a QuantSim."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _init(rng: np.random.Generator, name: str, shape: tuple[int, ...], scale: float = 0.3) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def cnn_model(seed: int = 0) -> onnx.ModelProto:
    """Conv+Relu -> MaxPool -> Conv (+residual Add) + Relu -> Flatten -> Gemm."""
    rng = np.random.default_rng(seed)
    inits = [_init(rng, "w1", (4, 1, 3, 3)), _init(rng, "b1", (4,), 0.1), _init(rng, "w2", (4, 4, 3, 3)),
             _init(rng, "b2", (4,), 0.1), _init(rng, "w3", (10, 64)), _init(rng, "b3", (10,), 0.1)]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Add", ["c2", "p1"], ["s2"], name="add2"),
        helper.make_node("Relu", ["s2"], ["r2"], name="relu2"),
        helper.make_node("Flatten", ["r2"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def attention_model(seed: int = 0, mask_value: float = float(np.finfo(np.float32).min)) -> onnx.ModelProto:
    """MatMul+Add (linear) -> scores = q k^T + additive mask (sentinels) -> Softmax -> MatMul with v."""
    rng = np.random.default_rng(seed)
    inits = [_init(rng, "wq", (8, 8)), _init(rng, "bq", (8,), 0.1), _init(rng, "wk", (8, 8)),
             numpy_helper.from_array(np.array(mask_value, np.float32), "neg"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q0"], name="q_mm"),
        helper.make_node("Add", ["q0", "bq"], ["q"], name="q_add"),
        helper.make_node("MatMul", ["x", "wk"], ["k"], name="k_mm"),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1], name="kt"),
        helper.make_node("MatMul", ["q", "kt"], ["s"], name="qk"),
        helper.make_node("Sub", ["one", "m"], ["inv"], name="inv"),
        helper.make_node("Mul", ["inv", "neg"], ["madd"], name="mask_mul"),
        helper.make_node("Add", ["s", "madd"], ["sm"], name="mask_add"),
        helper.make_node("Softmax", ["sm"], ["p"], axis=-1, name="softmax"),
        helper.make_node("MatMul", ["p", "x"], ["y"], name="pv"),
    ]
    graph = helper.make_graph(
        nodes, "attn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, 8]),
         helper.make_tensor_value_info("m", TensorProto.FLOAT, ["N", 1, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def attention_data(n: int = 32, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6, 8)).astype(np.float32)
    m = np.ones((n, 1, 6), np.float32)
    for i in range(n):
        m[i, 0, 3 + i % 3:] = 0.0  # padded positions
    return {"x": x, "m": m}


def cnn_data(n: int = 32, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, 1, 8, 8)).astype(np.float32)}


@pytest.fixture
def build_sim() -> Callable[..., tuple]:
    """(model, data) -> (graph, table, sim) with min-max calibration."""
    from sweeper.model.graph import ModelGraph
    from sweeper.model.intake import prepare_model
    from sweeper.quant import calibration
    from sweeper.sim.encodings import EncodingTable, QuantConfig
    from sweeper.sim.quantsim import QuantSim

    precisions = ["w8a8", "w8a16", "w16a16", "fp16", "w4a8", "w4a16", "w4a4", "w2a8"]

    def _build(model: onnx.ModelProto, data: dict[str, np.ndarray], config: QuantConfig | None = None):
        prepared = prepare_model(model)
        graph = ModelGraph(prepared)
        stats = calibration.collect(prepared, graph.activations, [], data, graph.input_names, batch_size=16)
        table = EncodingTable(graph, stats, config or QuantConfig())
        return graph, table, QuantSim(graph, table, threads=1, precisions=precisions)

    return _build


def fragile_mlp(seed: int = 0) -> onnx.ModelProto:
    """x -> fc1 -> Relu -> fc2 -> Relu -> fc3. fc2's weights are fragile: in every output row one huge weight
    sets the per-channel scale, so at 4 bits the small weights that carry the signal round to zero."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((16, 16)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((16, 16)) * 0.3).astype(np.float32)
    w2[0, :] = 40.0  # input 0 of fc2 is always 0 (fc1 bias -1e3 + Relu), so in FP32 the huge row is harmless
    w3 = (rng.standard_normal((16, 4)) * 0.3).astype(np.float32)
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(w3, "w3"),
             numpy_helper.from_array(np.zeros(16, np.float32), "b1"),
             numpy_helper.from_array(np.array([-1e3] + [0.0] * 15, np.float32), "b1dead")]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"),
        helper.make_node("Add", ["h1", "b1dead"], ["h1b"], name="fc1_bias"),
        helper.make_node("Relu", ["h1b"], ["r1"], name="relu1"),
        helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="fc2"),
        helper.make_node("Relu", ["h2"], ["r2"], name="relu2"),
        helper.make_node("MatMul", ["r2", "w3"], ["y"], name="fc3"),
    ]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def write_experiment(tmp, model: onnx.ModelProto, data: dict[str, np.ndarray], metric: str = "cosine",  # noqa: ANN001
                     max_drop: float = 0.01, candidates: str = "[w8a8, w4a8]", extra: str = ""):  # noqa: ANN201
    """An experiment file (onnx + npz) in ``tmp`` with the local pool and a local MLflow/Optuna store."""
    onnx.save(model, str(tmp / "model.onnx"))
    np.savez(tmp / "data.npz", **data)
    path = tmp / "exp.yaml"
    path.write_text(f"""name: {tmp.name.replace('-', '_')[:40] or 'tiny'}
model:
  onnx: model.onnx
data:
  calibration: data.npz
  evaluation: data.npz
metric: {metric}
target:
  max_drop: {max_drop}
candidates: {candidates}
pool: local
output: {tmp / 'out'}
tracking:
  uri: sqlite:///{tmp / 'mlflow.db'}
{extra}""")
    return path


# -- tests that start Ray inside the test process run in a child pytest ---------------------------------------
# A Ray runtime that dies in the process that started it can end that process at once (Ray's core worker calls
# _Exit(1) when a thread reaches it while or after it shuts down): in the pytest process that is a silent exit
# 1 with no summary. Tests marked ``isolated`` therefore run in a child `python -m pytest <node id>`; the parent
# reports the child's result, and its exit status and output when it ended without one.
ISOLATED_ENV = "SWEEPER_TEST_ISOLATED"
ISOLATED_TIMEOUT = 900.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "isolated: run this test in a child pytest process (it starts Ray in "
                                       "process; a dying runtime must not take the test runner down)")


# Two tiers (docs/development.md). `bash scripts/test.sh` runs `-m "not slow"`: the unit tests on tiny graphs and
# the end-to-end tests marked ``smoke`` (one real Ray + MLflow CLI run with sim = export, the README's Python
# example, one real pretrained model). Every other ``e2e`` test is ``slow``: only `bash scripts/test.sh --all`
# (CI) runs it. A unit test that takes more than a few seconds carries ``slow`` itself.
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("e2e") is not None and item.get_closest_marker("smoke") is None:
            item.add_marker(pytest.mark.slow)


def _run_isolated(item: pytest.Function) -> None:
    """Run one test in a child pytest (own process group); fail with the child's output unless it passed."""
    import signal
    import subprocess
    import sys

    root = item.config.rootpath
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "--rootdir",
           str(root), item.nodeid]
    env = dict(os.environ, **{ISOLATED_ENV: "1"})
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=ISOLATED_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"isolated test did not finish in {ISOLATED_TIMEOUT:.0f} s\n{out[-6000:]}", pytrace=False)
    finally:
        try:  # whatever the child left in its process group (a Ray runtime it could not stop)
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    summary = out.strip().splitlines()[-1] if out.strip() else ""
    if proc.returncode == 0 and " passed" in summary:
        return
    if proc.returncode == 0 and " skipped" in summary:
        pytest.skip(f"skipped in the isolated process: {summary}")
    pytest.fail(f"isolated test process ended with exit status {proc.returncode} (summary: {summary or 'none'})"
                f"\n{out[-6000:]}", pytrace=False)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Tests marked ``isolated`` run in a child process unless this already is that child."""
    if pyfuncitem.get_closest_marker("isolated") is None or os.environ.get(ISOLATED_ENV) == "1":
        return None
    _run_isolated(pyfuncitem)
    return True
