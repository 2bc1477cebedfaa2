"""Opset rules shared by the simulation and the export (one definition each).

Models arrive at any opset (real exports often at 11 or 12). Intake converts a model once to
:data:`TARGET_OPSET` (int16/uint16/int4 QuantizeLinear/DequantizeLinear need opset 21, per-channel
DequantizeLinear opset 13); the simulation and the export then run that same opset. Where the converter
cannot convert faithfully the model keeps its opset, and 16-bit quantizers use ONNX Runtime's
``com.microsoft`` QuantizeLinear/DequantizeLinear in both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import onnx

log = logging.getLogger(__name__)

MS_DOMAIN = "com.microsoft"
Q16_OPSET = 21  # int16/uint16/int4/uint4 QuantizeLinear/DequantizeLinear in ai.onnx
PER_CHANNEL_OPSET = 13  # per-channel (axis) DequantizeLinear
TARGET_OPSET = Q16_OPSET


def ai_onnx_opset(model: onnx.ModelProto) -> int:
    """The model's ai.onnx opset (1 when it declares none, as the ONNX spec says)."""
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=1)


def q16_domain(opset: int) -> str:
    """Domain of 16-bit QuantizeLinear/DequantizeLinear at ``opset``."""
    return "" if opset >= Q16_OPSET else MS_DOMAIN


def int_container(bits: int, signed: bool, int4_ok: bool = False) -> int:
    """The ONNX integer type a ``bits``-bit grid is stored in: int8/uint8, int16/uint16, and for 2/4 bits
    int4/uint4 where allowed (``int4_ok``), else the 8-bit type (behind a Clip to the narrower grid)."""
    if bits == 16:
        return onnx.TensorProto.INT16 if signed else onnx.TensorProto.UINT16
    if bits in (2, 4) and int4_ok:
        return onnx.TensorProto.INT4 if signed else onnx.TensorProto.UINT4
    if bits in (2, 4, 8):
        return onnx.TensorProto.INT8 if signed else onnx.TensorProto.UINT8
    raise ValueError(f"no integer container for a {bits}-bit encoding (supported: 2, 4, 8, 16 bits)")


def convert_opset(model: onnx.ModelProto, target: int,
                  check: Callable[[onnx.ModelProto], list[str]] | None = None) -> onnx.ModelProto | None:
    """``model`` at ai.onnx opset ``target``, or None when ``onnx.version_converter`` cannot do it faithfully.

    Faithful: the graph's input and output names are kept and ``check(converted)`` (names the caller relies
    on that went missing) returns nothing."""
    from onnx import version_converter

    try:
        out = version_converter.convert_version(model, target)
        onnx.checker.check_model(out)
    except Exception as exc:  # noqa: BLE001 - any converter failure means: keep the opset
        log.info("opset conversion to %d failed (%s: %s)", target, type(exc).__name__, exc)
        return None
    missing = check(out) if check else []
    if [i.name for i in out.graph.input] != [i.name for i in model.graph.input]:
        missing.append("graph inputs")
    if [o.name for o in out.graph.output] != [o.name for o in model.graph.output]:
        missing.append("graph outputs")
    if missing:
        log.info("opset conversion to %d renamed tensors (%s); not used", target, missing[:3])
        return None
    if target >= Q16_OPSET:
        out.ir_version = max(out.ir_version, 10)
    return out
