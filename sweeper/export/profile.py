"""One profile of a prepared model written out: the QDQ ONNX file and its AIMET encodings beside it.

The one definition the Python API (``Session.export``) and the CLI (``sweeper export``) share: what may be
exported (a uniform precision, a :class:`~sweeper.quant.profile.Profile`, or an AIMET encodings file, checked
against the model before anything is written) and how it is written (atomically, both files).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sweeper.errors import SweeperError
from sweeper.export.encodings_io import check_against_model, read_encodings, save_export
from sweeper.export.qdq import export_qdq
from sweeper.quant.precision import Precision
from sweeper.quant.profile import Profile

ProfileLike = str | Precision | Profile | os.PathLike  # a precision name, a Profile, or an .encodings path


def is_encodings_path(what: object) -> bool:
    """An AIMET encodings file rather than a precision name."""
    return isinstance(what, os.PathLike) or (isinstance(what, str) and what.endswith(".encodings"))


def encodings_profile(graph: Any, table: Any, path: str | os.PathLike, field: str = "encodings") -> Profile:
    """The profile an AIMET encodings file implies for this model. A file made for another model, or an entry the
    model cannot take (e.g. a scale count that is not the channel count), is a one-line error naming ``field``."""
    try:
        doc = read_encodings(path)
        weight_scales = {name: (graph.weight_array(name).shape[q.axis] if q.axis is not None else 1)
                         for name, q in graph.weight_quantizers.items()}
        check_against_model(doc, str(path), weight_scales, set(graph.activations))
        return table.load_aimet(doc)
    except ValueError as exc:
        raise SweeperError(field, str(exc)) from None


def resolve_profile(graph: Any, table: Any, what: ProfileLike, field: str = "profile") -> Profile:
    """``what`` as a Profile of this model: a Profile as given, a precision uniformly, an encodings file loaded."""
    if isinstance(what, Profile):
        return what
    if is_encodings_path(what):
        return encodings_profile(graph, table, what, field)
    if not isinstance(what, Precision):
        try:
            what = Precision.parse(str(what))
        except ValueError as exc:
            raise SweeperError(field, str(exc)) from None
    return Profile.uniform([g.name for g in graph.groups], what)


def export_profile(graph: Any, table: Any, profile: Profile, out: str | os.PathLike) -> tuple[Path, Any]:
    """Write ``profile`` as QDQ ONNX at ``out`` and its AIMET encodings next to it (``.encodings``); returns the
    ONNX path and the exported model."""
    path = Path(out)
    model = export_qdq(graph, table, profile)
    save_export(model, table.to_aimet(profile), path, path.with_suffix(".encodings"))
    return path, model


__all__ = ["ProfileLike", "encodings_profile", "export_profile", "is_encodings_path", "resolve_profile"]
