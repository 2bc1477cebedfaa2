"""AIMET 1.0.0 encodings files (JSON): validated reading, atomic writing, and the export pair on disk."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import onnx

VERSION = "1.0.0"
INT_BITS = (2, 4, 8, 16)  # the integer bit widths sweeper simulates and exports
SECTIONS = ("activation_encodings", "param_encodings")


def _fail(path: str | Path, what: str) -> ValueError:
    return ValueError(f"{path}: invalid AIMET {VERSION} encodings file: {what}")


def _is_int(v: Any) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())


def validate_encodings(doc: Any, path: str | Path = "<encodings>") -> dict[str, Any]:
    """Check ``doc`` is an AIMET 1.0.0 encodings document sweeper can load; returns it, else ValueError."""
    if not isinstance(doc, dict):
        raise _fail(path, f"the top level must be a JSON object, found {type(doc).__name__}")
    if doc.get("version") != VERSION:
        raise _fail(path, f"'version' must be {VERSION!r}, found {doc.get('version')!r}")
    for section in SECTIONS:
        if section not in doc:
            raise _fail(path, f"missing {section!r} (a list of encodings)")
        entries = doc[section]
        if not isinstance(entries, list):
            raise _fail(path, f"{section!r} must be a list, found {type(entries).__name__}")
        seen: set[str] = set()
        for k, e in enumerate(entries):
            where = f"{section}[{k}]"
            if not isinstance(e, dict):
                raise _fail(path, f"{where} must be an object, found {type(e).__name__}")
            name = e.get("name")
            if not isinstance(name, str) or not name:
                raise _fail(path, f"{where} has no 'name' (a non-empty string)")
            where = f"{where} ({name!r})"
            if name in seen:
                raise _fail(path, f"{where}: duplicate name in {section!r}")
            seen.add(name)
            _validate_entry(path, where, e)
    if "excluded_layers" in doc and not isinstance(doc["excluded_layers"], list):
        raise _fail(path, "'excluded_layers' must be a list")
    if "quantizer_args" in doc and not isinstance(doc["quantizer_args"], dict):
        raise _fail(path, "'quantizer_args' must be an object")
    return doc


def _validate_entry(path: str | Path, where: str, e: dict[str, Any]) -> None:
    dtype = e.get("dtype")
    if dtype not in ("INT", "FLOAT"):
        raise _fail(path, f"{where}: 'dtype' must be \"INT\" or \"FLOAT\", found {dtype!r}")
    enc_type = e.get("enc_type", "PER_TENSOR")
    if enc_type not in ("PER_TENSOR", "PER_CHANNEL"):
        raise _fail(path, f"{where}: 'enc_type' must be \"PER_TENSOR\" or \"PER_CHANNEL\", found {enc_type!r}")
    bw = e.get("bw")
    if dtype == "FLOAT":
        if bw != 16 or isinstance(bw, bool):
            raise _fail(path, f"{where}: a FLOAT encoding must have 'bw' 16 (float16), found {bw!r}")
        return
    if not _is_int(bw) or int(bw) not in INT_BITS:
        raise _fail(path, f"{where}: 'bw' must be one of {', '.join(map(str, INT_BITS))}, found {bw!r}")
    bw = int(bw)
    is_sym = e.get("is_sym", False)
    if not isinstance(is_sym, bool):
        raise _fail(path, f"{where}: 'is_sym' must be true or false, found {is_sym!r}")
    scale, offset = e.get("scale"), e.get("offset")
    if not isinstance(scale, list) or not scale:
        raise _fail(path, f"{where}: 'scale' must be a non-empty list of numbers")
    if not isinstance(offset, list) or len(offset) != len(scale):
        raise _fail(path, f"{where}: 'offset' must be a list as long as 'scale' ({len(scale)})")
    if enc_type == "PER_TENSOR" and len(scale) != 1:
        raise _fail(path, f"{where}: a PER_TENSOR encoding has one scale, found {len(scale)}")
    for s in scale:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0:
            raise _fail(path, f"{where}: every scale must be a finite positive number, found {s!r}")
    levels = (1 << bw) - 1
    for o in offset:
        if not _is_int(o):
            raise _fail(path, f"{where}: every offset must be an integer, found {o!r}")
        if is_sym and int(o) != -(1 << (bw - 1)):
            raise _fail(path, f"{where}: a symmetric {bw}-bit encoding has offset {-(1 << (bw - 1))}, found {o!r}")
        if not -levels <= int(o) <= 0:
            raise _fail(path, f"{where}: offset {o!r} is outside the {bw}-bit grid [{-levels}, 0]")


def check_against_model(doc: dict[str, Any], path: str | Path, weight_scales: dict[str, int],
                        activations: set[str]) -> None:
    """Check a validated encodings document fits the model it is applied to, else ValueError naming the entry:
    at least one entry names a quantized tensor of the model (else the file was made for another model), each
    activation encoding has one scale, and each weight encoding as many scales as ``weight_scales`` says
    (channels along the per-channel axis, or 1). Entries naming tensors the model does not quantize are skipped
    on load, as AIMET skips them."""
    entries = [(s, e) for s in SECTIONS for e in doc[s]]
    known = [(s, e) for s, e in entries if e["name"] in (weight_scales if s == "param_encodings" else activations)]
    if not known:
        sample = ", ".join(repr(e["name"]) for _, e in entries[:3]) or "none"
        raise ValueError(f"{path}: none of its {len(entries)} encodings names a quantized tensor of this model "
                         f"(found {sample}): expected encodings exported for this model")
    for section, e in known:
        if e["dtype"] == "FLOAT":
            continue
        want = weight_scales[e["name"]] if section == "param_encodings" else 1
        if len(e["scale"]) not in (want, 1):
            what = f"{want} (one per channel) or 1" if want > 1 else "1"
            raise ValueError(f"{path}: {section} {e['name']!r} has {len(e['scale'])} scales: expected {what}")


def _reject_constant(token: str) -> float:
    raise ValueError(f"{token} is not a number")


def read_encodings(path: str | Path) -> dict[str, Any]:
    """Load and validate an AIMET 1.0.0 encodings file; ValueError naming the file and the problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{p}: encodings file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: cannot read encodings file ({type(exc).__name__}: {exc})") from None
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _fail(p, f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except ValueError as exc:
        raise _fail(p, f"not valid JSON ({exc})") from None
    return validate_encodings(doc, p)


def _atomic_write(path: Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file next to ``path`` (fsynced); returns the temporary path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def non_finite_values(doc: Any, where: str = "") -> list[str]:
    """Where a document holds a float that is inf or NaN (JSON cannot hold one; no encoding may be one): each
    place as ``section[i] ('name').key``, the entry named where it has a name."""
    if isinstance(doc, float):
        return [] if math.isfinite(doc) else [f"{where} = {doc}"]
    if isinstance(doc, dict):
        label = f"{where} ({doc['name']!r})" if isinstance(doc.get("name"), str) else where
        return [p for k, v in doc.items() for p in non_finite_values(v, f"{label}.{k}" if label else str(k))]
    if isinstance(doc, list | tuple):
        return [p for i, v in enumerate(doc) for p in non_finite_values(v, f"{where}[{i}]")]
    return []


def _encodings_bytes(doc: dict[str, Any], path: Path) -> bytes:
    validate_encodings(doc, path)
    return (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode("utf-8")


def write_encodings(path: str | Path, doc: dict[str, Any]) -> None:
    """Validate ``doc`` and write it as JSON (temporary file, then rename: never half-written)."""
    p = Path(path)
    tmp = _atomic_write(p, _encodings_bytes(doc, p))
    try:
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_export(model: onnx.ModelProto, encodings_doc: dict[str, Any], onnx_path: str | Path,
                encodings_path: str | Path) -> None:
    """Write the exported model and its encodings: both go to temporary files first and are renamed into
    place only when both are complete, so a failure leaves no half-written file (and no temporary)."""
    op, ep = Path(onnx_path), Path(encodings_path)
    enc_bytes = _encodings_bytes(encodings_doc, ep)  # validate before touching the disk
    if model.ByteSize() >= 2**31 - 1:
        raise ValueError(f"{op}: the exported model is over 2 GB; external-data export is not supported")
    temps: list[Path] = []
    try:
        temps.append(_atomic_write(op, model.SerializeToString()))
        temps.append(_atomic_write(ep, enc_bytes))
        os.replace(temps[0], op)
        os.replace(temps[1], ep)
        temps.clear()
    finally:
        for t in temps:
            t.unlink(missing_ok=True)
