"""QuantSim: the model with a fake-quantizer on every quantizer, evaluated by ONNX Runtime."""

from __future__ import annotations

from sweeper.sim.encodings import EncodingTable
from sweeper.sim.quantsim import QuantSim

__all__ = ["EncodingTable", "QuantSim"]
