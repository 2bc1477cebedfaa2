"""Model intake (ONNX file or PyTorch module), preparation, and the analysed graph."""

from __future__ import annotations

from sweeper.model.graph import ModelGraph, QuantizerGroup
from sweeper.model.intake import load_model, prepare_model

__all__ = ["ModelGraph", "QuantizerGroup", "load_model", "prepare_model"]
