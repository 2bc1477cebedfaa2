"""sweeper: distributed experiment-sweep orchestrator for post-training quantization of ONNX models."""

from __future__ import annotations

__version__ = "0.1.0"
