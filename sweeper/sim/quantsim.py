"""QuantSim: one ONNX Runtime session per simulation; a Profile is applied by changing inputs only.

The simulation graph is built once:

* weights (and Conv/Gemm biases) become graph inputs; their fake-quantized values are precomputed per
  precision in numpy exactly as DequantizeLinear computes them, so weight quantization costs nothing;
* each activation quantizer is an ``If`` on a run-time flag: the 8-bit branch is a plain
  QuantizeLinear/DequantizeLinear pair (the kernels the exported model runs, so sim = export); other bit
  widths clip to their grid and use a 16-bit container; fp16 is a Cast round trip; off is Identity;
* a fake-quant that is followed by a MaxPool is applied after it (exact, since fake-quant is monotone; 4x
  fewer elements on a CNN).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper

from sweeper.model.graph import ModelGraph
from sweeper.quant.encoding import Encoding
from sweeper.quant.profile import Profile
from sweeper.sim.encodings import EncodingTable

MS_DOMAIN = "com.microsoft"


def _scalar(value: object, dtype: type) -> np.ndarray:
    return np.array(value, dtype=dtype)


class QuantSim:
    """The simulation model of ``graph`` with the encodings of ``table``."""

    def __init__(self, graph: ModelGraph, table: EncodingTable, threads: int = 1) -> None:
        self.graph = graph
        self.table = table
        self.threads = threads
        self.signed = table.config.act_symmetric
        self.model = self._build()
        self.session = self._session()
        self.input_names = graph.input_names
        self._weight_cache: dict[tuple[str, str], np.ndarray] = {}
        self._act_cache: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        self.bound: dict[str, np.ndarray] = {}
        self.profile: Profile | None = None

    # -- building ---------------------------------------------------------------------------------
    def _build(self) -> onnx.ModelProto:
        g = self.graph
        src = g.model
        opset = max((o.version for o in src.opset_import if o.domain in ("", "ai.onnx")), default=13)
        self._q16_domain = "" if opset >= 21 else MS_DOMAIN
        t8 = TensorProto.INT8 if self.signed else TensorProto.UINT8
        t16 = TensorProto.INT16 if self.signed else TensorProto.UINT16
        bound_params = set(g.weight_quantizers)
        bound_params |= {wq.bias for wq in g.weight_quantizers.values() if wq.bias}
        new_inputs = list(src.graph.input)
        for name in sorted(bound_params):
            init = g.initializers[name]
            new_inputs.append(helper.make_tensor_value_info(name, init.data_type, list(init.dims)))
        inits = [t for t in src.graph.initializer if t.name not in bound_params]

        loc_to_tensor = {g.sim_location[t]: t for t in g.activations}
        outputs = set(g.output_names)
        renamed: dict[str, str] = {}  # tensor -> name consumers should read
        fq_nodes_after: dict[str, list[onnx.NodeProto]] = {}
        for loc, t in loc_to_tensor.items():
            src_name = loc + "__raw" if loc in outputs else loc
            dst_name = loc if loc in outputs else loc + "__fq"
            fq_nodes_after[loc] = self._fake_quant(src_name, dst_name, t, t8, t16, new_inputs)
            if loc not in outputs:
                renamed[loc] = dst_name

        nodes: list[onnx.NodeProto] = []
        for inp in g.input_names:
            nodes.extend(fq_nodes_after.get(inp, []))
        for n in src.graph.node:
            node = onnx.NodeProto()
            node.CopyFrom(n)
            for k, i in enumerate(node.input):
                if i in renamed:
                    node.input[k] = renamed[i]
            for k, o in enumerate(node.output):
                if o in outputs and o in fq_nodes_after:
                    node.output[k] = o + "__raw"
            nodes.append(node)
            for o in n.output:
                nodes.extend(fq_nodes_after.get(o, []))
        graph = helper.make_graph(nodes, src.graph.name + "_sim", new_inputs, list(src.graph.output), inits)
        opsets = list(src.opset_import)
        if self._q16_domain == MS_DOMAIN and not any(o.domain == MS_DOMAIN for o in opsets):
            opsets.append(helper.make_opsetid(MS_DOMAIN, 1))
        model = helper.make_model(graph, opset_imports=opsets, ir_version=src.ir_version)
        return model

    def _fake_quant(self, x: str, out: str, t: str, t8: int, t16: int,
                    inputs: list[onnx.ValueInfoProto]) -> list[onnx.NodeProto]:
        """If(m8){Q8/DQ8} else If(m16){Clip/Q16/DQ16} else If(mf16){Cast/Cast} else {Identity}."""
        p = f"{t}::"
        names = {k: p + k for k in ("scale", "zp8", "zp16", "lo", "hi", "m8", "m16", "mf16")}
        types = {"scale": TensorProto.FLOAT, "zp8": t8, "zp16": t16, "lo": TensorProto.FLOAT,
                 "hi": TensorProto.FLOAT, "m8": TensorProto.BOOL, "m16": TensorProto.BOOL,
                 "mf16": TensorProto.BOOL}
        for k, n in names.items():
            inputs.append(helper.make_tensor_value_info(n, types[k], []))
        s, z8, z16 = names["scale"], names["zp8"], names["zp16"]

        def branch(tag: str, body: list[onnx.NodeProto], result: str) -> onnx.GraphProto:
            return helper.make_graph(body, f"{t}_{tag}", [], [helper.make_tensor_value_info(result, TensorProto.FLOAT, None)])

        b8 = branch("q8", [
            helper.make_node("QuantizeLinear", [x, s, z8], [p + "q8"]),
            helper.make_node("DequantizeLinear", [p + "q8", s, z8], [p + "d8"]),
        ], p + "d8")
        b16 = branch("q16", [
            helper.make_node("Clip", [x, names["lo"], names["hi"]], [p + "c16"]),
            helper.make_node("QuantizeLinear", [p + "c16", s, z16], [p + "q16"], domain=self._q16_domain),
            helper.make_node("DequantizeLinear", [p + "q16", s, z16], [p + "d16"], domain=self._q16_domain),
        ], p + "d16")
        bf = branch("f16", [
            helper.make_node("Cast", [x], [p + "h"], to=TensorProto.FLOAT16),
            helper.make_node("Cast", [p + "h"], [p + "f"], to=TensorProto.FLOAT),
        ], p + "f")
        bid = branch("off", [helper.make_node("Identity", [x], [p + "id"])], p + "id")
        not8 = branch("n8", [helper.make_node("If", [names["m16"]], [p + "r16"], then_branch=b16,
                                              else_branch=branch("n16", [helper.make_node(
                                                  "If", [names["mf16"]], [p + "rf"], then_branch=bf,
                                                  else_branch=bid)], p + "rf"))], p + "r16")
        return [helper.make_node("If", [names["m8"]], [out], then_branch=b8, else_branch=not8, name=p + "fq")]

    def _session(self):  # noqa: ANN202 - onnxruntime has no stubs
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        return ort.InferenceSession(self.model.SerializeToString(), so, providers=["CPUExecutionProvider"])

    # -- profiles ---------------------------------------------------------------------------------
    def _act_feeds(self, t: str, enc: Encoding | None) -> dict[str, np.ndarray]:
        p = f"{t}::"
        sdt8 = np.int8 if self.signed else np.uint8
        sdt16 = np.int16 if self.signed else np.uint16
        feeds = {p + "scale": _scalar(1.0, np.float32), p + "zp8": _scalar(0, sdt8), p + "zp16": _scalar(0, sdt16),
                 p + "lo": _scalar(0.0, np.float32), p + "hi": _scalar(0.0, np.float32),
                 p + "m8": _scalar(False, np.bool_), p + "m16": _scalar(False, np.bool_),
                 p + "mf16": _scalar(False, np.bool_)}
        if enc is None:
            return feeds
        if enc.dtype == "float":
            feeds[p + "mf16"] = _scalar(True, np.bool_)
            return feeds
        feeds[p + "scale"] = _scalar(enc.scale[0], np.float32)
        zp = int(enc.zero_point[0])
        if enc.bitwidth == 8:
            feeds[p + "m8"] = _scalar(True, np.bool_)
            feeds[p + "zp8"] = _scalar(zp, sdt8)
        else:
            lo, hi = enc.bounds()
            feeds[p + "m16"] = _scalar(True, np.bool_)
            feeds[p + "zp16"] = _scalar(zp, sdt16)
            feeds[p + "lo"] = _scalar(lo[0], np.float32)
            feeds[p + "hi"] = _scalar(hi[0], np.float32)
        return feeds

    def _weight_value(self, name: str, profile: Profile) -> np.ndarray:
        prec = profile[self.table.group_of[name]]
        key = (name, prec.name)
        if key not in self._weight_cache:
            enc = self.table.weight_encoding(name, prec)
            w = self.graph.weight_array(name).astype(np.float32)
            self._weight_cache[key] = w if enc is None else enc.fake_quantize(w)
        return self._weight_cache[key]

    def feeds_for(self, profile: Profile) -> dict[str, np.ndarray]:
        """All run-time inputs that realize ``profile`` (weights, biases, quantizer parameters)."""
        feeds: dict[str, np.ndarray] = {}
        for t in self.graph.activations:
            prec = profile[self.table.group_of[t]]
            key = (t, prec.name)
            if key not in self._act_cache:
                self._act_cache[key] = self._act_feeds(t, self.table.act_encoding(t, prec))
            feeds.update(self._act_cache[key])
        for w, wq in self.graph.weight_quantizers.items():
            feeds[w] = self._weight_value(w, profile)
            if wq.bias:
                b = self.graph.weight_array(wq.bias).astype(np.float32)
                bscale = self.table.bias_scale(w, profile)
                if bscale is not None:
                    q = np.clip(np.rint(b / bscale), -(2**31), 2**31 - 1)
                    b = (q.astype(np.int64).astype(np.float32) * bscale).astype(np.float32)
                elif profile[self.table.group_of[w]].is_fp16:
                    b = b.astype(np.float16).astype(np.float32)
                feeds[wq.bias] = b
        return feeds

    def invalidate(self) -> None:
        """Forget precomputed values (after encodings in the table changed, e.g. loaded from a file)."""
        self._weight_cache.clear()
        self._act_cache.clear()
        if self.profile is not None:
            self.apply(self.profile)

    def apply(self, profile: Profile) -> None:
        """Switch the simulation to ``profile`` (no session rebuild)."""
        self.bound = self.feeds_for(profile)
        self.profile = profile

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run the simulation under the applied profile."""
        if self.profile is None:
            raise RuntimeError("QuantSim.apply(profile) must be called before run()")
        all_feeds = dict(self.bound)
        all_feeds.update(feeds)
        return self.session.run(None, all_feeds)

    def runner(self) -> Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]:
        return self.run
