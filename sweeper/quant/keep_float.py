"""Activations a quantizer must not touch, by what reads them: where a zero breaks the reader, where the value
is used as an integer, and where a tensor is divided by its own sum.

Where a zero breaks a model: ops that turn an input of 0 into -inf, inf or NaN.

A quantization grid always holds zero (AIMET's and ONNX's convention), so a strictly positive tensor, such as a
power spectrum plus epsilon before a ``Log`` or a variance plus epsilon before a ``Sqrt`` and a divisor, has its
smallest values rounded to exactly 0 on it: the ``Log`` gives -inf, the division inf, and everything after
(a min/max normalisation, a softmax) is lost. 16-bit activations do it as surely as 8-bit ones (measured: an
audio transcription model at 0.81 F1 with w16a16 against 0.96 in FP32, every loss from one ``Log``). Such a
tensor is kept float (it is never made 0), and reported; float16 underflow is reported where it reaches one.

Where a float is used as an integer: a ``Cast`` to an integer type truncates, so ids carried as floats (a
Keras embedding's ``Cast`` + ``Gather``, converted by tf2onnx) come back one lower from any grid that does not
hold them exactly (136.9995 -> 136: a different embedding row). Measured: a word segmenter at 0.63 F1 with
w16a16 against 0.94 in FP32, all of it from its two id inputs. Such a tensor is kept float.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import onnx

# (op type, input index) where an input of 0 gives -inf, inf or NaN (or a Sqrt whose 0 feeds one of these)
ZERO_SENSITIVE = frozenset({("Log", 0), ("Reciprocal", 0), ("Div", 1), ("Pow", 0), ("Sqrt", 0)})


# Ops whose strictly positive output keeps the small values of a strictly positive input small: a power
# spectrum's Pow, Sum and Sqrt, an epsilon's Add, a gain's Mul... A Log reads through them what the input held:
# linear quantization anywhere on that chain loses the decades below one grid step (the log of a value
# rounded to 0, or to one step, instead of 1e-14), so the chain up to its first non-positive tensor stays float.
POSITIVE_CHAIN = frozenset({"Add", "Mul", "Sum", "Sqrt", "Pow", "Abs", "Max", "Clip", "ReduceSum", "ReduceMean",
                            "ReduceL2", "ReduceSumSquare", "Identity", "Reshape", "Transpose", "Squeeze",
                            "Unsqueeze", "Flatten", "Concat", "Slice", "Expand"})


def zero_sensitive_readers(tensor: str, consumers: Iterable[onnx.NodeProto]) -> list[str]:
    """The readers of ``tensor`` (``"OpType name"``) that read it where a zero breaks them."""
    return sorted({f"{n.op_type} {n.name}".strip() for n in consumers
                   for k, i in enumerate(n.input) if i == tensor and (n.op_type, k) in ZERO_SENSITIVE})


def zero_read_activations(activations: Iterable[str], consumers: Mapping[str, list[onnx.NodeProto]]
                          ) -> dict[str, list[str]]:
    """Every activation read where a zero breaks its reader, with those readers (the tensors whose float16
    underflow is counted and reported, and where the never-zero chains start)."""
    return {t: r for t in activations if (r := zero_sensitive_readers(t, consumers.get(t, [])))}


INTEGER_TYPES = frozenset({onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32,
                           onnx.TensorProto.INT64, onnx.TensorProto.UINT8, onnx.TensorProto.UINT16,
                           onnx.TensorProto.UINT32, onnx.TensorProto.UINT64, onnx.TensorProto.BOOL})


def integer_readers(tensor: str, consumers: Iterable[onnx.NodeProto]) -> list[str]:
    """The readers of ``tensor`` that use its values as integers: a Cast to an integer (or bool) type."""
    out = set()
    for n in consumers:
        if n.op_type == "Cast" and tensor in n.input:
            to = next((a.i for a in n.attribute if a.name == "to"), None)
            if to in INTEGER_TYPES:
                out.add(f"Cast {n.name}".strip())
    return sorted(out)


SUMS = frozenset({"ReduceSum", "ReduceL1"})


def self_normalized(divisions: Iterable[onnx.NodeProto], producer: Mapping[str, onnx.NodeProto]
                    ) -> dict[str, list[str]]:
    """Tensors divided by their own sum (``a / ReduceSum(a)``: a softmax or a normalisation written by hand), and
    those sums: ``{tensor: [the Div]}``. The quotient is what the model uses; ``a`` may span many decades (an
    ``Exp`` without the maximum subtracted), which no linear grid holds, so ``a`` and its sum stay float, as
    they do inside a ``Softmax`` op, and the quotient is quantized."""
    out: dict[str, list[str]] = {}
    for n in divisions:
        if n.op_type != "Div" or len(n.input) < 2:
            continue
        total = producer.get(n.input[1])
        if total is not None and total.op_type in SUMS and total.input and total.input[0] == n.input[0]:
            reader = [f"Div {n.name}".strip()]
            out[n.input[0]] = reader
            out[n.input[1]] = reader
    return out


def never_zero(observed_min: float, count: int, readers: list[str]) -> bool:
    """Whether a tensor must stay float: every calibration value was strictly positive and a reader breaks on 0."""
    return count > 0 and observed_min > 0.0 and bool(readers)


def positive_chains(readers: Mapping[str, list[str]], positive: Callable[[str], bool],
                    producer: Mapping[str, onnx.NodeProto]) -> dict[str, list[str]]:
    """Tensors to keep float, each with the readers it reaches: every strictly positive tensor read where a zero
    breaks (``readers``), and, back through ``POSITIVE_CHAIN`` ops, the strictly positive tensors feeding them."""
    keep = {t: list(r) for t, r in readers.items() if positive(t)}
    frontier = list(keep)
    while frontier:
        t = frontier.pop()
        node = producer.get(t)
        if node is None or node.op_type not in POSITIVE_CHAIN:
            continue
        for i in node.input:
            if i and i not in keep and positive(i):
                keep[i] = keep[t]
                frontier.append(i)
    return keep


__all__ = ["INTEGER_TYPES", "POSITIVE_CHAIN", "SUMS", "ZERO_SENSITIVE", "integer_readers", "never_zero",
           "positive_chains", "self_normalized", "zero_read_activations", "zero_sensitive_readers"]
