"""EncodingTable: scale/offset of every quantizer at every precision, computed lazily and cached."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sweeper.model.graph import ModelGraph
from sweeper.quant.bias import BiasEncoding, int32_bias
from sweeper.quant.calibration import CalibrationStats
from sweeper.quant.encoding import (
    Encoding,
    compute_encoding,
    compute_weight_encoding,
    encoding_from_range,
    float16_encoding,
)
from sweeper.quant.fp16 import FP16_FLUSH, FP16_MAX, exceeds_fp16, fp16_round_trip
from sweeper.quant.keep_float import (
    integer_readers,
    never_zero,
    positive_chains,
    self_normalized,
    zero_read_activations,
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
    bias: str = "int32"  # "int32": input scale x weight scale (deployment); "float": kept float (AIMET's sim)


class EncodingTable:
    """Encodings for every (quantizer, bit width); loaded encodings override computed ones."""

    def __init__(self, graph: ModelGraph, stats: CalibrationStats, config: QuantConfig) -> None:
        self.graph = graph
        self.stats = stats
        self.config = config
        self._act: dict[tuple[str, int, int], Encoding] = {}
        self._loaded_act: dict[tuple[str, int], Encoding] = {}
        self._weight: dict[tuple[str, int], Encoding] = {}
        self._bias: dict[tuple[str, bytes], BiasEncoding] = {}
        self.rounding: dict[tuple[str, int], np.ndarray] = {}  # learned integers (AdaRound) per (weight, bits)
        self.group_of = graph.group_of()
        self.zero_readers = zero_read_activations(graph.activations, graph.consumers)
        # strictly positive tensors read where a zero breaks the reader, and the positive chains feeding them
        # (sweeper.quant.keep_float): never quantized
        acts = set(graph.activations)

        def positive(t: str) -> bool:
            st = stats.tensors.get(t)
            return t in acts and st is not None and never_zero(float(st.min), st.count, ["reader"])

        self.never_zero = positive_chains(self.zero_readers, positive, graph.producer)
        # floats used as integers (a Cast to an integer type truncates what a grid moved off the integer)
        self.integer_valued = {t: r for t in graph.activations if (r := integer_readers(t, graph.consumers.get(t, [])))}
        # tensors divided by their own sum (a softmax written by hand) and the sums: float, the quotient quantized
        self.normalized = {t: r for t, r in self_normalized(graph.nodes, graph.producer).items() if t in acts}

    # quantizers the simulation and the export keep float whatever the precision (sweeper.quant.keep_float):
    # tensors holding masking sentinels, strictly positive tensors that a zero would break (a Log's input, a divisor,
    # and the positive chains feeding them), floats used as integers (read by a Cast to an integer type)
    def always_float(self, tensor: str) -> bool:
        if tensor in self.never_zero or tensor in self.integer_valued or tensor in self.normalized:
            return True
        st = self.stats.tensors.get(tensor)
        return st is not None and st.sentinels > 0  # a mask value no grid can hold (sweeper.quant.calibration)

    def kept_float(self) -> list[dict[str, object]]:
        """The activations kept float because of what reads them, with the reason (results.json)."""
        zero = [{"tensor": t, "reason": "strictly positive, read where a zero gives -inf/inf/NaN: a quantization "
                                        "grid holds 0, so it is kept float", "min": float(self.stats.tensors[t].min),
                 "read_by": r} for t, r in sorted(self.never_zero.items())]
        ints = [{"tensor": t, "reason": "a float used as an integer (a Cast to an integer type truncates values a "
                                        "grid moved off the integers): kept float", "read_by": r}
                for t, r in sorted(self.integer_valued.items())]
        norm = [{"tensor": t, "reason": "divided by its own sum (a softmax written by hand): kept float like a "
                                        "Softmax op's inside, the quotient quantized", "read_by": r}
                for t, r in sorted(self.normalized.items())]
        return zero + ints + norm

    def activation(self, tensor: str, bits: int, weight_bits: int = 32) -> Encoding:
        """``tensor``'s encoding at ``bits``, from the statistics collected with the weights at ``weight_bits``
        (AIMET's calibration; the FP32 statistics when that width had no pass of its own)."""
        if (tensor, bits) in self._loaded_act:
            return self._loaded_act[(tensor, bits)]
        by_bits = getattr(self.stats, "by_weight_bits", {}).get(weight_bits, {})
        if tensor not in by_bits:
            weight_bits = 32
        key = (tensor, bits, weight_bits)
        if key not in self._act:
            st = by_bits.get(tensor) or self.stats.tensors[tensor]
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
        self._loaded_act[(tensor, enc.bitwidth)] = enc  # a loaded encoding holds whatever the weights

    def set_weight(self, name: str, enc: Encoding) -> None:
        self._weight[(name, enc.bitwidth)] = enc

    def set_rounding(self, name: str, bits: int, q: np.ndarray) -> None:
        """Use the integers ``q`` (e.g. AdaRound's learned rounding) for weight ``name`` at ``bits`` instead of
        rounding to nearest; the encoding stays. The simulation and the exporter both read them here."""
        enc = self.weight(name, bits)
        q = np.asarray(q, np.int64)
        if q.shape != self.graph.weight_array(name).shape:
            raise ValueError(f"rounding for {name!r}: shape {q.shape}, the weight is {self.graph.weight_array(name).shape}")
        if q.min(initial=enc.qmin) < enc.qmin or q.max(initial=enc.qmax) > enc.qmax:
            raise ValueError(f"rounding for {name!r} leaves the {bits}-bit grid [{enc.qmin}, {enc.qmax}]")
        self.rounding[(name, bits)] = q

    def weight_integers(self, name: str, enc: Encoding) -> np.ndarray:
        """The integers weight ``name`` is stored as under the integer encoding ``enc``: the learned rounding
        when one is set for its bit width, else QuantizeLinear's round to nearest."""
        q = self.rounding.get((name, enc.bitwidth))
        return q if q is not None else enc.quantize(self.graph.weight_array(name).astype(np.float32))

    # -- per profile ----------------------------------------------------------------------------
    def act_encoding(self, tensor: str, prec: Precision) -> Encoding | None:
        """The encoding the activation gets under ``prec`` (None: stays float32)."""
        if prec.acts_float or self.always_float(tensor):
            return None
        if prec.is_fp16:
            return float16_encoding()
        return self.activation(tensor, prec.act_bits, prec.weight_bits)

    def weight_encoding(self, name: str, prec: Precision) -> Encoding | None:
        if prec.weights_float:
            return None
        if prec.is_fp16:
            return float16_encoding()
        return self.weight(name, prec.weight_bits)

    def _bias_prec(self, bias: str, prec: Precision | Profile) -> Precision:
        bq = self.graph.bias_quantizers[bias]
        return prec[self.group_of[bq.weight]] if isinstance(prec, Profile) else prec

    def bias_scale(self, bias: str, prec: Precision | Profile) -> np.ndarray | None:
        """Nominal scale of the int32 bias (input scale x weight scale), or None when the bias stays float
        (or float16). ``bias`` is a key of ``graph.bias_quantizers``.

        The op's input quantizer belongs to the op's own group, so the group's precision decides both."""
        bq = self.graph.bias_quantizers.get(bias)
        if bq is None:
            return None
        prec = self._bias_prec(bias, prec)
        if prec.is_float or prec.weights_float or self.config.bias == "float":
            return None
        ins = self.graph.input_quantizers(self.graph.node_by_name[bq.op])
        if len(ins) != 1:
            return None
        a_enc = self.act_encoding(ins[0], prec)
        if a_enc is None or a_enc.dtype != "int":
            return None
        w_enc = self.weight(bq.weight, prec.weight_bits)
        return (a_enc.scale.astype(np.float32)[0] * w_enc.scale.astype(np.float32)).astype(np.float32)

    def bias_encoding(self, bias: str, prec: Precision | Profile) -> BiasEncoding | None:
        """The int32 representation of ``bias`` under ``prec`` (rescaled where it would not fit int32;
        :mod:`sweeper.quant.bias`), or None when it is not stored as int32."""
        scale = self.bias_scale(bias, prec)
        if scale is None:
            return None
        key = (bias, np.asarray(scale, np.float32).tobytes())
        if key not in self._bias:
            self._bias[key] = int32_bias(self.graph.weight_array(bias).astype(np.float32), scale)
        return self._bias[key]

    def bias_value(self, bias: str, prec: Precision | Profile) -> np.ndarray:
        """The bias as the simulation and the exported model see it: int32 (DequantizeLinear), fp16 or float."""
        enc = self.bias_encoding(bias, prec)
        if enc is not None:
            return enc.dequantize()
        b = self.graph.weight_array(bias).astype(np.float32)
        if bias in self.graph.bias_quantizers and self._bias_prec(bias, prec).is_fp16:
            return fp16_round_trip(b)
        return b

    def adjustments(self, profile: Profile) -> dict[str, list[dict[str, object]]]:
        """Values a deployment could not represent as computed, and what was done instead: biases whose
        int32 scale was enlarged, tensors that saturate in float16 (reported, never silent)."""
        rescaled = []
        for b, bq in self.graph.bias_quantizers.items():
            enc = self.bias_encoding(b, profile)
            if enc is not None and enc.n_rescaled:
                rescaled.append(enc.report(b, bq.op))
        fp16 = []
        for t in self.graph.activations:
            st = self.stats.tensors.get(t)
            if st is None or not profile[self.group_of[t]].is_fp16 or self.always_float(t):
                continue
            if st.count and (exceeds_fp16(float(st.min), float(st.max)) or st.sentinels):
                fp16.append({"tensor": t, "min": float(st.min), "max": float(st.max), "sentinels": int(st.sentinels),
                             "how": f"saturated to +-{FP16_MAX:g} in float16"})
        for w in self.graph.weight_quantizers:
            if profile[self.group_of[w]].is_fp16:
                a = self.graph.weight_array(w)
                if a.size and exceeds_fp16(float(a.min()), float(a.max())):
                    fp16.append({"tensor": w, "min": float(a.min()), "max": float(a.max()),
                                 "how": f"saturated to +-{FP16_MAX:g} in float16"})
        return {"bias_rescaled": rescaled, "fp16_saturated": fp16, "fp16_underflow": self._fp16_underflow(profile)}

    def _fp16_underflow(self, profile: Profile) -> list[dict[str, object]]:
        """Tensors kept in float16 under ``profile`` whose non-zero values float16 turns into zero, where the
        tensor feeds an op that a zero breaks (a Log, a divisor, ...: :mod:`sweeper.quant.keep_float`)."""
        out = []
        for t in self.graph.activations:
            st = self.stats.tensors.get(t)
            if st is None or not st.fp16_flushed or not profile[self.group_of[t]].is_fp16 or self.always_float(t):
                continue
            readers = self.zero_readers.get(t)
            if readers:
                out.append({"tensor": t, "values_flushed": st.fp16_flushed,
                            "fraction": round(st.fp16_flushed / max(st.count, 1), 6), "read_by": readers,
                            "how": f"values of magnitude <= {FP16_FLUSH:g} become 0 in float16"})
        return out

    def weight_value(self, weight: str, prec: Precision) -> np.ndarray:
        """The weight as the simulation sees it: DequantizeLinear(QuantizeLinear(w)), fp16 or float."""
        w = self.graph.weight_array(weight).astype(np.float32)
        enc = self.weight_encoding(weight, prec)
        if enc is None:
            return w
        return fp16_round_trip(w) if enc.dtype == "float" else enc.dequantize(self.weight_integers(weight, enc))

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
        biases = []  # int32, symmetric, zero point 0 (AIMET's offset -2**31); kept out of param_encodings,
        for b in self.graph.bias_quantizers:  # whose readers expect 2-16 bit quantizers
            benc = self.bias_encoding(b, profile)
            if benc is not None:
                biases.append({"name": b, "dtype": "INT", "enc_type": "PER_CHANNEL" if benc.scale.size > 1
                               else "PER_TENSOR", "bw": 32, "is_sym": True,
                               "scale": [float(x) for x in benc.scale], "offset": [-(2**31)] * benc.scale.size})
        sweeper_section = {"bias_encodings": biases, **self.adjustments(profile)}
        return {"version": "1.0.0", "activation_encodings": acts, "param_encodings": params,
                "excluded_layers": [], "sweeper": sweeper_section, "quantizer_args": {
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
