"""Techniques: algorithms that read the simulation and write what they learned into the encoding table.

A technique sits above :mod:`sweeper.sim` (and below the steps of :mod:`sweeper.search` that run it): it runs
the quantized model (:class:`~sweeper.sim.quantsim.QuantSim`, or the ONNX graph in PyTorch,
:mod:`sweeper.techniques.torchsim`) on calibration or training data, learns something, and hands it back as
what :class:`~sweeper.sim.encodings.EncodingTable` holds (learned weight integers, encodings, weights), so the
simulation and the exporter use it unchanged. Here: AdaRound (:mod:`.adaround`, learned weight rounding) and
QAT (:mod:`.qat`, quantization-aware training); the ones to come belong here too: SeqMSE, cross-layer
equalization (CLE), bias correction, AdaQuant. Layer-wise techniques share
:mod:`.activation_sampler` (a layer's quantized inputs and FP32 outputs). Nothing here imports the steps,
the cluster or tracking; :mod:`sweeper.quant` (plain data) imports nothing from here.
"""
