"""Export: the quantized model as plain ONNX QDQ plus its AIMET 1.0.0 encodings file."""

from __future__ import annotations

from sweeper.export.encodings_io import read_encodings, save_export, validate_encodings, write_encodings
from sweeper.export.qdq import export_qdq

__all__ = ["export_qdq", "read_encodings", "save_export", "validate_encodings", "write_encodings"]
