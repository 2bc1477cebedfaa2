"""A slice of the model zoo (bench/zoo) in the test suite: architectures and export idioms that each found a
class of failure, every one built offline from packages scripts/setup.sh installs. Per model: Step 1 at w16a16
keeps the FP32 metric (a drop of at most 0.005, cosine models at least 0.999), and the exported QDQ model equals
the simulation under its reference session at one integer precision. The whole zoo is bench/zoo/check.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

pytestmark = pytest.mark.e2e

SLICE = {  # model -> (the precision checked for sim = export, what it stands for)
    "gpt2": ("w8a8", "causal mask of float-min sentinels (masked scores kept float)"),
    "jax_style_mlp": ("w8a16", "opset 21, Einsum, softmax by hand: Exp, ReduceSum, Div (a positive chain)"),
    "whisper_stft": ("w8a8", "STFT op, mel MatMul, Log inside the graph"),
    "tf_style_cnn": ("w8a8", "tf2onnx names with ':' and ';', NHWC, fixed batch of 1"),
    "loop_if": ("w8a8", "Loop and If, int64 scalar input"),
    "lstm_text": ("w8a16", "opset 9, LSTM op, int64 tokens"),
}


@pytest.mark.parametrize("name", sorted(SLICE))
def test_zoo_model_keeps_fp32_at_w16a16_and_exports_what_it_simulates(name: str, tmp_path: Path) -> None:
    import bench.zoo as zoo
    import sweeper
    from sweeper.model.session import reference_session
    from sweeper.quant.profile import Profile
    from sweeper.sim.quantsim import QuantSim

    prec = SLICE[name][0]
    exp = zoo.get(name).experiment(candidates=["w16a16", prec], output=str(tmp_path / "out"), pool="local",
                                   workers=1)
    with sweeper.Session(exp, tracking=False) as s:
        rows = {r.name: r for r in s.baseline().rows}
        fp32 = s.ws.fp32_metric
        assert rows["w16a16"].metric >= fp32 - 0.005, (name, fp32, rows["w16a16"].metric)
        ws = s.ws
        sim = QuantSim(ws.graph, ws.table, threads=1, precisions=exp.candidates)
        sim.apply(Profile.uniform([g.name for g in ws.graph.groups], prec))
        feeds = ws.sample_feeds(8)
        onnx_path = rows[prec].onnx
        assert onnx_path and Path(onnx_path).is_file()
        exported = reference_session(onnx_path, 1).run(None, feeds)
        simulated = sim.run(feeds)
        assert len(exported) == len(onnx.load(onnx_path).graph.output)
        for a, b in zip(exported, simulated, strict=False):
            assert np.array_equal(a, b, equal_nan=True), name
