"""EncodingTable: scale/offset of every quantizer at every precision, computed lazily and cached."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sweeper.model.graph import ModelGraph
from sweeper.quant.calibration import CalibrationStats
from sweeper.quant.encoding import (
    Encoding,
    compute_encoding,
    compute_weight_encoding,
    encoding_from_range,
    float16_encoding,
)
from sweeper.quant.precision import Precision
from sweeper.quant.profile import Profile


@dataclass
class QuantConfig:
    """How encodings are computed (validated in the experiment file)."""

    scheme: str = "minmax"
    percentile: float = 99.99
    act_symmetric: bool = False
    weight_symmetric: bool = True
    per_channel: bool = True


class EncodingTable:
    """Encodings for every (quantizer, bit width); loaded encodings override computed ones."""

    def __init__(self, graph: ModelGraph, stats: CalibrationStats, config: QuantConfig) -> None:
        self.graph = graph
        self.stats = stats
        self.config = config
        self._act: dict[tuple[str, int], Encoding] = {}
        self._weight: dict[tuple[str, int], Encoding] = {}
        self.group_of = graph.group_of()

    # quantizers the simulation keeps in float whatever the precision (masks without a real range)
    def always_float(self, tensor: str) -> bool:
        st = self.stats.tensors.get(tensor)
        return st is not None and st.sentinels > 0 and st.degenerate

    def activation(self, tensor: str, bits: int) -> Encoding:
        key = (tensor, bits)
        if key not in self._act:
            st = self.stats.tensors[tensor]
            if st.count == 0:
                self._act[key] = encoding_from_range(np.zeros(1), np.zeros(1), bits, self.config.act_symmetric)
            else:
                self._act[key] = compute_encoding(
                    st, bits, self.config.act_symmetric, self.config.scheme, self.config.percentile
                )
        return self._act[key]

    def weight(self, name: str, bits: int) -> Encoding:
        key = (name, bits)
        if key not in self._weight:
            wq = self.graph.weight_quantizers[name]
            axis = wq.axis if self.config.per_channel else None
            self._weight[key] = compute_weight_encoding(
                self.graph.weight_array(name), bits, self.config.weight_symmetric, axis
            )
        return self._weight[key]

    def set_activation(self, tensor: str, enc: Encoding) -> None:
        self._act[(tensor, enc.bitwidth)] = enc

    def set_weight(self, name: str, enc: Encoding) -> None:
        self._weight[(name, enc.bitwidth)] = enc

    # -- per profile ----------------------------------------------------------------------------
    def act_encoding(self, tensor: str, prec: Precision) -> Encoding | None:
        """The encoding the activation gets under ``prec`` (None: stays float32)."""
        if prec.acts_float or self.always_float(tensor):
            return None
        if prec.is_fp16:
            return float16_encoding()
        return self.activation(tensor, prec.act_bits)

    def weight_encoding(self, name: str, prec: Precision) -> Encoding | None:
        if prec.weights_float:
            return None
        if prec.is_fp16:
            return float16_encoding()
        return self.weight(name, prec.weight_bits)

    def bias_scale(self, weight: str, prec: Precision | Profile) -> np.ndarray | None:
        """Scale of the int32 bias (input scale x weight scale), or None when the bias stays float.

        The op's input quantizer belongs to the op's own group, so the group's precision decides both."""
        if isinstance(prec, Profile):
            prec = prec[self.group_of[weight]]
        wq = self.graph.weight_quantizers[weight]
        if wq.bias is None or prec.is_float or prec.weights_float:
            return None
        node = self.graph.node_by_name[wq.op]
        ins = self.graph.input_quantizers(node)
        if len(ins) != 1:
            return None
        a_enc = self.act_encoding(ins[0], prec)
        if a_enc is None or a_enc.dtype != "int":
            return None
        w_enc = self.weight(weight, prec.weight_bits)
        return (a_enc.scale.astype(np.float32)[0] * w_enc.scale.astype(np.float32)).astype(np.float32)

    def bias_value(self, weight: str, prec: Precision) -> np.ndarray | None:
        """The bias as the simulation and the exported model see it: int32-rounded, fp16 or float."""
        wq = self.graph.weight_quantizers[weight]
        if wq.bias is None:
            return None
        b = self.graph.weight_array(wq.bias).astype(np.float32)
        scale = self.bias_scale(weight, prec)
        if scale is not None:
            q = np.clip(np.rint(b / scale), -(2**31), 2**31 - 1).astype(np.int64)
            return (q.astype(np.float32) * scale).astype(np.float32)
        if prec.is_fp16:
            return b.astype(np.float16).astype(np.float32)
        return b

    def weight_value(self, weight: str, prec: Precision) -> np.ndarray:
        """The weight as the simulation sees it: DequantizeLinear(QuantizeLinear(w)), fp16 or float."""
        w = self.graph.weight_array(weight).astype(np.float32)
        enc = self.weight_encoding(weight, prec)
        return w if enc is None else enc.fake_quantize(w)

    def to_aimet(self, profile: Profile) -> dict[str, object]:
        """AIMET 1.0.0 encodings of ``profile``."""
        acts = []
        for t in self.graph.activations:
            enc = self.act_encoding(t, profile[self.group_of[t]])
            if enc is not None:
                acts.append(enc.to_aimet(t))
        params = []
        for w in self.graph.weight_quantizers:
            enc = self.weight_encoding(w, profile[self.group_of[w]])
            if enc is not None:
                params.append(enc.to_aimet(w))
        return {"version": "1.0.0", "activation_encodings": acts, "param_encodings": params,
                "excluded_layers": [], "quantizer_args": {
                    "activation_bitwidth": None, "param_bitwidth": None,
                    "per_channel_quantization": self.config.per_channel,
                    "quant_scheme": self.config.scheme,
                    "is_symmetric": self.config.weight_symmetric}}

    def load_aimet(self, doc: dict[str, object]) -> Profile:
        """Load an AIMET 1.0.0 encodings document: sets the encodings and returns the profile they imply."""
        from sweeper.quant.precision import FP16, FP32

        group_prec: dict[str, Precision] = {}
        acts = {e["name"]: e for e in doc.get("activation_encodings", [])}  # type: ignore[union-attr]
        params = {e["name"]: e for e in doc.get("param_encodings", [])}  # type: ignore[union-attr]
        a_bits: dict[str, int | str] = {}
        w_bits: dict[str, int | str] = {}
        for name, e in acts.items():
            if name not in self.group_of:
                continue
            enc = Encoding.from_aimet(e)
            if enc.dtype == "float":
                a_bits[self.group_of[name]] = "fp16"
            else:
                self.set_activation(name, enc)
                a_bits[self.group_of[name]] = enc.bitwidth
        for name, e in params.items():
            if name not in self.group_of:
                continue
            enc = Encoding.from_aimet(e, axis=self.graph.weight_quantizers[name].axis)
            if enc.dtype == "float":
                w_bits[self.group_of[name]] = "fp16"
            else:
                self.set_weight(name, enc)
                w_bits[self.group_of[name]] = enc.bitwidth
        for g in self.graph.groups:
            a, w = a_bits.get(g.name), w_bits.get(g.name)
            if a == "fp16" or w == "fp16":
                group_prec[g.name] = FP16
            elif a is None and w is None:
                group_prec[g.name] = FP32
            else:
                group_prec[g.name] = Precision(int(w or 16), int(a or 16), False)
        return Profile.make(group_prec)
