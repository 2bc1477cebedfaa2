"""ONNX graphs run as PyTorch modules (for quantization-aware training); imports torch, so only QAT imports it."""

from __future__ import annotations

from sweeper.torchsim.graph import OPS, OnnxModule, unsupported_ops

__all__ = ["OPS", "OnnxModule", "unsupported_ops"]
