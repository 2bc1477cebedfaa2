"""Model intake: an ONNX file, or a PyTorch module exported with ``torch.onnx.export``; then preparation."""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import onnx

from sweeper.errors import SweeperError

EXPORT_OPSET = 17


def resolve_callable(path: str, where: str) -> Any:
    """Import ``pkg.module:attr`` (the working directory is importable, as with ``python -m``)."""
    if ":" not in path:
        raise SweeperError(where, f"expected an import path of the form pkg.module:function, got {path!r}")
    module_name, _, attr = path.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's path
        raise SweeperError(where, f"cannot import module {module_name!r} ({type(exc).__name__}: {exc})") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise SweeperError(where, f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise SweeperError(where, f"{path!r} is not callable")
    return obj


def load_onnx_file(path: str | Path, where: str = "model.onnx") -> onnx.ModelProto:
    """Load and check an ONNX file (external data next to it is loaded too)."""
    p = Path(path)
    if not p.exists():
        raise SweeperError(where, f"model file not found: {p}")
    if not p.is_file() or not os.access(p, os.R_OK):
        raise SweeperError(where, f"model file is not a readable file: {p}")
    try:
        model = onnx.load(str(p), load_external_data=True)
    except Exception as exc:  # noqa: BLE001
        raise SweeperError(where, f"{p} is not an ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise SweeperError(where, f"{p} is not an ONNX model (no graph nodes)")
    try:
        onnx.checker.check_model(model, full_check=False)
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SweeperError(where, f"{p} fails the ONNX checker: {first}") from None
    return model


def export_torch(factory_path: str | Any, out_path: Path, where: str = "model.torch") -> onnx.ModelProto:
    """Call ``factory()`` -> ``(module, example_input)`` (an import path or a callable) and export it with a
    dynamic batch axis."""
    try:
        import torch
    except ImportError:
        raise SweeperError(where, "PyTorch is not installed: pip install torch==2.13.0 (CPU)") from None
    factory = resolve_callable(factory_path, where) if isinstance(factory_path, str) else factory_path
    try:
        made = factory()
    except Exception as exc:  # noqa: BLE001
        raise SweeperError(where, f"{getattr(factory, '__name__', factory_path)}() failed: "
                                  f"{type(exc).__name__}: {exc}") from None
    if not (isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], torch.nn.Module)):
        raise SweeperError(where, "the torch factory must return (torch.nn.Module, example_input)")
    module, example = made
    module.eval()
    if isinstance(example, dict):
        names = list(example)
        args: tuple[Any, ...] = tuple(example.values())
    elif isinstance(example, (tuple, list)):
        args = tuple(example)
        names = ["input"] if len(args) == 1 else [f"input_{i}" for i in range(len(args))]
    else:
        args = (example,)
        names = ["input"]
    with torch.no_grad():
        probe = module(*args)
    n_out = len(probe) if isinstance(probe, (tuple, list)) else 1
    out_names = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
    dynamic = {n: {0: "batch"} for n in names + out_names}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_file = Path(tmp) / "model.onnx"
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, args, str(tmp_file), input_names=names, output_names=out_names,
                dynamic_axes=dynamic, opset_version=EXPORT_OPSET, dynamo=False,
            )
        model = onnx.load(str(tmp_file))
    onnx.save(model, str(out_path))
    return model


def load_model(onnx_path: str | None, torch_factory: str | None, workdir: Path) -> onnx.ModelProto:
    """The user's model as ONNX (exported into ``workdir`` when given as a torch factory)."""
    if onnx_path:
        return load_onnx_file(onnx_path)
    assert torch_factory
    return export_torch(torch_factory, workdir / "exported.onnx")


OPSET_NOTE = "sweeper.opset_original"  # metadata key: the opset the model arrived at, when it was converted


def convert_for_quantization(model: onnx.ModelProto, where: str = "model") -> onnx.ModelProto:
    """The model at the opset the simulation and the export both run (``opset.TARGET_OPSET``), converted
    once here. The original opset is kept in the metadata (:func:`opset_report`). A model the converter
    cannot bring to opset 21 keeps its opset (16-bit quantizers then use com.microsoft Q/DQ); below opset 13,
    which per-channel DequantizeLinear needs, that is an error."""
    from sweeper.model.opset import PER_CHANNEL_OPSET, TARGET_OPSET, ai_onnx_opset, convert_opset

    original = ai_onnx_opset(model)
    if original >= TARGET_OPSET:
        return model
    converted = convert_opset(model, TARGET_OPSET)
    if converted is None and original < PER_CHANNEL_OPSET:
        converted = convert_opset(model, PER_CHANNEL_OPSET)
        if converted is None:
            raise SweeperError(where, f"the model is at opset {original}; sweeper needs opset >= {PER_CHANNEL_OPSET} "
                                      "(per-channel DequantizeLinear) and onnx.version_converter cannot convert it")
    if converted is None:
        return model
    meta = {p.key: p.value for p in converted.metadata_props}
    meta[OPSET_NOTE] = str(original)
    del converted.metadata_props[:]
    onnx.helper.set_model_props(converted, meta)
    return converted


def opset_report(model: onnx.ModelProto) -> dict[str, object]:
    """What intake did to the opset: ``{"original": 11, "used": 21, "converted": true}``."""
    from sweeper.model.opset import ai_onnx_opset

    used = ai_onnx_opset(model)
    original = next((int(p.value) for p in model.metadata_props if p.key == OPSET_NOTE), used)
    return {"original": original, "used": used, "converted": original != used}


def prepare_model(model: onnx.ModelProto, where: str = "model", convert: bool = True) -> onnx.ModelProto:
    """Opset conversion (:func:`convert_for_quantization`; ``convert=False`` keeps the model's opset), dense
    ``Einsum`` layers as ``MatMul`` (:mod:`sweeper.model.rewrite`), shape inference, constant folding and BatchNorm folding (ONNX Runtime's basic, EP-independent rewrites,
    which emit only standard ONNX ops); graph input and output names are kept."""
    import onnxruntime as ort

    if convert:
        model = convert_for_quantization(model, where)
    if any(n.op_type == "Einsum" for n in model.graph.node):
        from sweeper.model.rewrite import einsum_as_matmul

        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        if einsum_as_matmul(copy):
            model = copy
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.onnx"
        dst = Path(tmp) / "prepared.onnx"
        onnx.save(model, str(src))
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = str(dst)
        so.log_severity_level = 3
        ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
        prepared = onnx.load(str(dst))
    try:
        prepared = onnx.shape_inference.infer_shapes(prepared)
    except Exception:  # noqa: BLE001 - shape inference is a help, not a requirement
        pass
    # ORT names folded constants after the ops they came from; keep the graph's I/O exactly as given.
    assert [i.name for i in prepared.graph.output] == [o.name for o in model.graph.output]
    if not any(p.key == OPSET_NOTE for p in prepared.metadata_props):
        for p in model.metadata_props:
            if p.key == OPSET_NOTE:
                prepared.metadata_props.add(key=p.key, value=p.value)
    return prepared
