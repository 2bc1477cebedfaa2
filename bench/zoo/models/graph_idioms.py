"""Graphs in the shapes other converters produce, trained here on scikit-learn's digits (a few seconds):

* ``tf_style_cnn``: a Keras-like CNN (two Conv + MaxPool, Dense, Dense, Softmax) exported from PyTorch with
  NHWC input and a NHWC flatten, then rewritten with ``onnx.helper`` the way tf2onnx writes graphs: a fixed
  batch of 1 (``[1, 16, 16, 1]``), input ``serving_default_conv2d_input:0``, output
  ``StatefulPartitionedCall:0``, node and tensor names with ``/``, ``;`` and ``:`` (``sequential/conv2d/
  BiasAdd;sequential/conv2d/Conv2D;conv2d/bias``), Dense as ``MatMul`` + ``Add``, ``Transpose`` around the
  convolutions. Data: a list of feeds (one image each) with labels. Opset 13.
* ``jax_style_mlp``: an MLP written with ``onnx.helper`` the way jax2onnx writes ``jnp`` code: ``Einsum``
  dense layers (``bi,ij->bj``), LayerNorm from ``ReduceMean``/``Pow``/``Sqrt``/``Div``, exact GELU with
  ``Erf``, and a softmax as ``Exp`` / ``ReduceSum`` / ``Div`` of logits scaled so the largest reaches ~35
  (exp overflows float16), names like ``jit(predict)/dot_general``, input ``inputs/x``. Opset 21.
* ``sklearn_mlp``: ``StandardScaler`` + ``PCA`` + ``MLPClassifier`` converted by skl2onnx: ``ai.onnx.ml``
  ``Scaler``, int64 ``label`` and float ``probabilities`` outputs (the metric reads ``probabilities``).

Metric: top-1 against the digits' labels (300 held-out images).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bench.zoo._util import cached_model, torch_export

RECIPE = "v1"


def _digits(scale: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(images [n, 8s, 8s] in [0, 1], labels, train, calibration, evaluation indices)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.kron(d.images / 16.0, np.ones((scale, scale))).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    return x, d.target.astype(np.int64), order[:1200], order[1200:1328], order[1400:1700]


def _train(net: Any, x: np.ndarray, y: np.ndarray, epochs: int, lr: float = 3e-3) -> Any:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        g = torch.Generator().manual_seed(0)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        for _ in range(epochs):
            for idx in torch.randperm(len(xt), generator=g).split(32):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


# ---------------------------------------------------------------------------------------------- TF style


def tf_rename(model: onnx.ModelProto, input_name: str, output_name: str) -> onnx.ModelProto:
    """Rename every tensor and node the way tf2onnx/TFLite names them (``/``, ``;``, ``:0``)."""
    g = model.graph
    layer_of = {"Conv": "conv2d", "MaxPool": "max_pooling2d", "MatMul": "dense", "Relu": "re_lu",
                "Transpose": "transpose", "Reshape": "flatten", "Softmax": "softmax", "Add": "dense"}
    counts: dict[str, int] = {}
    rename: dict[str, str] = {g.input[0].name: input_name, g.output[0].name: output_name}
    init_names = {t.name for t in g.initializer}
    for node in g.node:
        kind = layer_of.get(node.op_type, node.op_type.lower())
        if node.op_type != "Add":
            counts[kind] = counts.get(kind, -1) + 1
        layer = kind if counts.get(kind, 0) == 0 else f"{kind}_{counts[kind]}"
        if node.op_type == "Conv":
            node.name = f"sequential/{layer}/BiasAdd;sequential/{layer}/Conv2D;{layer}/bias"
            for i, name in enumerate(node.input[1:], 1):
                rename.setdefault(name, f"sequential/{layer}/{'Conv2D' if i == 1 else 'BiasAdd'}/ReadVariableOp:0")
        elif node.op_type in ("MatMul", "Add"):
            node.name = f"sequential/{layer}/{'MatMul' if node.op_type == 'MatMul' else 'BiasAdd'}"
            for name in node.input:
                if name in init_names:
                    rename.setdefault(name, f"sequential/{layer}/{node.op_type}/ReadVariableOp:0")
        else:
            node.name = f"sequential/{layer}/{node.op_type}"
        for out in node.output:
            rename.setdefault(out, f"{node.name}:0")
    for node in g.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
    for t in g.initializer:
        t.name = rename.get(t.name, t.name)
    for v in [*g.input, *g.output]:
        v.name = rename.get(v.name, v.name)
    del g.value_info[:]
    g.name = "tf2onnx"
    model.producer_name, model.producer_version = "bench.zoo (tf2onnx-style)", RECIPE
    return model


def build_tf_cnn(cache_dir: Path) -> dict:
    x, y, train, cal, ev = _digits(2)
    inp, out = "serving_default_conv2d_input:0", "StatefulPartitionedCall:0"

    def make() -> onnx.ModelProto:
        import torch
        from torch import nn

        class KerasLike(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.c1, self.c2 = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1)
                self.w1, self.b1 = nn.Parameter(torch.randn(512, 64) * 0.04), nn.Parameter(torch.zeros(64))
                self.w2, self.b2 = nn.Parameter(torch.randn(64, 10) * 0.1), nn.Parameter(torch.zeros(10))
                self.export = False

            def forward(self, nhwc: torch.Tensor) -> torch.Tensor:
                h = nhwc.permute(0, 3, 1, 2)
                h = nn.functional.max_pool2d(torch.relu(self.c1(h)), 2)
                h = nn.functional.max_pool2d(torch.relu(self.c2(h)), 2)
                h = h.permute(0, 2, 3, 1).reshape(1 if self.export else h.shape[0], 512)
                logits = torch.relu(h @ self.w1 + self.b1) @ self.w2 + self.b2
                return torch.softmax(logits, -1) if self.export else logits

        torch.manual_seed(0)
        net = _train(KerasLike(), x[train][..., None], y[train], 4)
        net.export = True
        m = torch_export(net, (torch.zeros(1, 16, 16, 1),), opset=13, input_names=["x"], output_names=["probs"])
        return tf_rename(m, inp, out)

    path = cached_model(cache_dir, f"tf_style_cnn_{RECIPE}.onnx", make)
    calib = [{inp: x[i][None, ..., None]} for i in cal[:64]]
    evals = [{inp: x[i][None, ..., None], "labels": y[i:i + 1]} for i in ev[:200]]
    return dict(model=path, calibration=calib, evaluation=evals, metric="top1", max_drop=0.01, batch_size=1)


# ---------------------------------------------------------------------------------------------- JAX style


def _jax_graph(p: dict[str, np.ndarray], temperature: float) -> onnx.ModelProto:
    nodes, inits = [], []
    scope = "jit(predict)"

    def const(name: str, value: np.ndarray) -> str:
        if all(t.name != f"{scope}/{name}" for t in inits):
            inits.append(numpy_helper.from_array(np.asarray(value), f"{scope}/{name}"))
        return f"{scope}/{name}"

    def op(kind: str, ins: list[str], name: str, **attrs: Any) -> str:
        out = f"{scope}/{name}"
        nodes.append(helper.make_node(kind, ins, [out], name=out, **attrs))
        return out

    axes = const("axes_last", np.array([-1], np.int64))
    h = "inputs/x"
    mu = op("ReduceMean", [h, axes], "layer_norm/mean", keepdims=1)
    dev = op("Sub", [h, mu], "layer_norm/sub")
    var = op("ReduceMean", [op("Pow", [dev, const("two", np.float32(2.0))], "layer_norm/integer_pow"), axes],
             "layer_norm/var", keepdims=1)
    std = op("Sqrt", [op("Add", [var, const("eps", np.float32(1e-6))], "layer_norm/add_eps")], "layer_norm/sqrt")
    h = op("Add", [op("Mul", [op("Div", [dev, std], "layer_norm/div"), const("ln/scale", p["ln.weight"])],
                      "layer_norm/mul"), const("ln/bias", p["ln.bias"])], "layer_norm/add")
    for i, name in enumerate(("d1", "d2", "d3")):
        h = op("Einsum", [h, const(f"{name}/kernel", p[f"{name}.weight"].T.copy())], f"{name}/dot_general",
               equation="bi,ij->bj")
        h = op("Add", [h, const(f"{name}/bias", p[f"{name}.bias"])], f"{name}/add")
        if i < 2:
            erf = op("Erf", [op("Div", [h, const("sqrt2", np.float32(np.sqrt(2.0)))], f"gelu{i}/div")], f"gelu{i}/erf")
            h = op("Mul", [op("Mul", [h, op("Add", [erf, const("one", np.float32(1.0))], f"gelu{i}/add")],
                              f"gelu{i}/mul"), const("half", np.float32(0.5))], f"gelu{i}/mul_half")
    h = op("Mul", [h, const("temperature", np.float32(temperature))], "logits/mul")
    e = op("Exp", [h], "softmax/exp")
    probs = op("Div", [e, op("ReduceSum", [e, axes], "softmax/reduce_sum", keepdims=1)], "softmax/div")
    graph = helper.make_graph(nodes, "jit_predict",
                              [helper.make_tensor_value_info("inputs/x", TensorProto.FLOAT, ["batch", 64])],
                              [helper.make_tensor_value_info(probs, TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], producer_name="bench.zoo (jax-style)")
    model.ir_version = 10
    return model


def build_jax_mlp(cache_dir: Path) -> dict:
    x, y, train, cal, ev = _digits(1)
    flat = x.reshape(len(x), 64)

    def make() -> onnx.ModelProto:
        import torch
        from torch import nn

        torch.manual_seed(0)
        net = nn.Sequential()
        net.add_module("ln", nn.LayerNorm(64, eps=1e-6))
        net.add_module("d1", nn.Linear(64, 128))
        net.add_module("g1", nn.GELU())
        net.add_module("d2", nn.Linear(128, 64))
        net.add_module("g2", nn.GELU())
        net.add_module("d3", nn.Linear(64, 10))
        net = _train(net, flat[train], y[train], 6)
        with torch.no_grad():
            peak = float(net(torch.from_numpy(flat[train])).max())
        params = {k: v.detach().numpy().astype(np.float32) for k, v in net.state_dict().items()}
        return _jax_graph(params, round(35.0 / peak, 2))

    path = cached_model(cache_dir, f"jax_style_mlp_{RECIPE}.onnx", make)
    return dict(model=path, calibration={"inputs/x": flat[cal]}, evaluation={"inputs/x": flat[ev], "labels": y[ev]},
                metric="top1", max_drop=0.01, batch_size=100)


# ---------------------------------------------------------------------------------------------- sklearn


def build_sklearn(cache_dir: Path) -> dict:
    x, y, train, cal, ev = _digits(1)
    flat = x.reshape(len(x), 64)

    def make() -> onnx.ModelProto:
        import warnings

        from skl2onnx import to_onnx
        from sklearn.decomposition import PCA
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        pipe = make_pipeline(StandardScaler(), PCA(32, random_state=0),
                             MLPClassifier((64,), max_iter=300, random_state=0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe.fit(flat[train], y[train])
        return to_onnx(pipe, flat[:1], target_opset={"": 15, "ai.onnx.ml": 3}, options={"zipmap": False})

    path = cached_model(cache_dir, f"sklearn_mlp_{RECIPE}.onnx", make)
    in_name = onnx.load(path).graph.input[0].name
    return dict(model=path, calibration={in_name: flat[cal]}, evaluation={in_name: flat[ev], "labels": y[ev]},
                metric="top1", metric_output="probabilities", max_drop=0.01, batch_size=100)
