"""Activation statistics collected with the weights already quantized, as AIMET calibrates.

aimet-onnx's ``compute_encodings`` runs the calibration data through the simulation with every parameter
quantizer in one-shot quantize-dequantize mode and every activation quantizer only gathering statistics: the
activation ranges are those of the network *with its weights at the target bit width*. At 8 bits that is
nearly the FP32 range; at 4 and 2 bits it is not (on the MNIST example the third conv's output reaches 4.26
with 4-bit weights and 3.48 with 2-bit weights, against 3.99 in FP32), and at 4-bit activations the
difference moves the metric by more than the parity target allows.

The statistics still come from one pass per weight bit width (not per profile): for a weight bit width ``b``
the model is run once with every quantized weight replaced by its fake-quantized value at ``b``, and the
activations are observed unquantized. The FP32 pass (``CalibrationStats.tensors``) stays the one for float
weights and for everything that is not a precision (shapes, sentinels, fp16 reports).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from sweeper.model.graph import ModelGraph
from sweeper.quant.calibration import TensorStats, collect
from sweeper.quant.encoding import Encoding

# weights at or above this many bits are calibrated as float: the grid is finer than float32 noise matters
FLOAT_WEIGHT_BITS = 32


def model_with_quantized_weights(
    graph: ModelGraph, weight_encoding: Callable[[str, int], Encoding], bits: int
) -> onnx.ModelProto:
    """A copy of ``graph.model`` whose quantized weights hold ``DequantizeLinear(QuantizeLinear(w))`` at
    ``bits`` (``weight_encoding(name, bits)`` gives each weight's encoding, e.g. ``EncodingTable.weight``).
    Biases and weights without a quantizer are left as they are (AIMET keeps biases float while calibrating)."""
    model = onnx.ModelProto()
    model.CopyFrom(graph.model)
    for init in model.graph.initializer:
        if init.name not in graph.weight_quantizers:
            continue
        w = numpy_helper.to_array(init).astype(np.float32)
        init.CopyFrom(numpy_helper.from_array(weight_encoding(init.name, bits).fake_quantize(w), init.name))
    return model


def weight_bits_to_calibrate(bits: Iterable[int]) -> list[int]:
    """The integer weight bit widths that need their own pass (float weights use the FP32 statistics)."""
    return sorted({int(b) for b in bits if 0 < int(b) < FLOAT_WEIGHT_BITS})


def collect_weight_aware(
    graph: ModelGraph,
    weight_encoding: Callable[[str, int], Encoding],
    weight_bits: Iterable[int],
    data: Any,
    batch_size: int = 64,
    max_samples: int | None = None,
    threads: int = 0,
    histograms: bool = True,
    whole: Iterable[str] = (),
) -> dict[int, dict[str, TensorStats]]:
    """Statistics of every activation quantizer of ``graph``, one pass per integer weight bit width, with the
    weights fake-quantized at that width: ``{bits: {tensor: TensorStats}}``. ``data`` is whatever
    :func:`sweeper.quant.calibration.collect` takes (the calibration data or Dataset); ``whole``: tensors the
    FP32 pass found masking sentinels in (read whole at once, see ``collect``)."""
    out: dict[int, dict[str, TensorStats]] = {}
    for bits in weight_bits_to_calibrate(weight_bits):
        model = model_with_quantized_weights(graph, weight_encoding, bits)
        stats = collect(model, graph.activations, [], data, graph.input_names, batch_size=batch_size,
                        max_samples=max_samples, threads=threads, histograms=histograms, fp16_flush=(),
                        whole=whole)
        out[bits] = stats.tensors
    return out
