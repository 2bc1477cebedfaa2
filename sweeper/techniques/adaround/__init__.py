"""AdaRound: learned rounding of the weights of Conv, ConvTranspose, Gemm and MatMul, layer by layer.

Rounding to nearest minimises each weight's own error, not the layer's output error. AdaRound (Nagel et al.,
2020; AIMET's ``apply_adaround``) learns for every weight whether to round down or up: the weight on its grid
is ``(clamp(floor(w / s) + zp + h(V), qmin, qmax) - zp) * s`` with the rectified sigmoid
``h(V) = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)`` (zeta 1.1, gamma -0.1), ``V`` initialised so that
``h`` is the fractional part of ``w / s`` (the soft weight starts as the float weight; hard rounding of the
initial ``V`` is rounding to nearest). Per layer, Adam minimises

    reconstruction + reg * sum(1 - |2 h(V) - 1| ** beta)

on batches of the calibration data, the regulariser off during a warm start (20 % of the iterations) and
``beta`` annealed from 20 to 2 by a cosine after it (AIMET's schedule). The reconstruction error is AIMET's:
the squared L2 norm over the channel axis, averaged over samples and positions, between the layer's output
(with its fused activation, a Relu/Clip/... that alone reads it) computed from the *quantized* model's input
and with the learned weights, and the FP32 model's output. Layers go in graph order, and each layer's input
comes from the simulation with the earlier layers already AdaRounded and activations quantized at the
precision (:class:`~sweeper.sim.quantsim.QuantSim`, rebuilt per layer since it holds weights as constants).

The result is one integer array per weight on its encoding's grid (encodings unchanged), which
:meth:`~sweeper.sim.encodings.EncodingTable.set_rounding` gives to the simulation and the exporter. A layer
whose learned rounding reconstructs worse than rounding to nearest over the calibration data keeps nearest.

Modules: :mod:`.layers` (which layers, and why others are skipped), :mod:`.torch_layer` (a layer in PyTorch),
:mod:`.optimize` (grid, regulariser, loss, Adam), :mod:`.driver` (the layer loop and its record),
:mod:`.rounding_file` (``rounding.npz``). The activations come from
:mod:`sweeper.techniques.activation_sampler` (in memory up to a budget, memory-mapped files past it).
PyTorch is imported only inside the functions that optimise (the rest of sweeper imports without it).
"""

from __future__ import annotations

from sweeper.techniques.adaround.driver import AdaRoundResult, LayerResult, adaround
from sweeper.techniques.adaround.layers import Layer, find_layers
from sweeper.techniques.adaround.optimize import AdaRoundConfig
from sweeper.techniques.adaround.rounding_file import ROUNDING_FILE, load_rounding, save_rounding

__all__ = ["ROUNDING_FILE", "AdaRoundConfig", "AdaRoundResult", "Layer", "LayerResult", "adaround", "find_layers",
           "load_rounding", "save_rounding"]
