"""Rewrites of the graph at intake that keep its meaning and let the quantization rules see a layer.

An ``Einsum`` that is a matrix product with a constant (``bi,ij->bj``, ``...i,ji->...j``: what jax2onnx and some
exporters write for a dense layer) becomes a ``MatMul`` with that constant as its weight (transposed once when
the equation reads it as ``ji``). As an ``Einsum`` its weight stayed float and its MACs counted nothing, so every
profile cost the same and AMP had nothing to choose by.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
from onnx import numpy_helper

_MATMUL = re.compile(r"^(?P<p>(?:\.\.\.)?[a-zA-Z]*)(?P<i>[a-zA-Z]),(?P<w>[a-zA-Z]{2})->(?P<q>(?:\.\.\.)?[a-zA-Z]*)"
                     r"(?P<j>[a-zA-Z])$")


def _matmul_form(equation: str) -> bool | None:
    """For ``<p>i,ij-><p>j``: False (the weight as it is); for ``<p>i,ji-><p>j``: True (transposed); else None."""
    m = _MATMUL.match(equation.replace(" ", ""))
    if not m or m["p"] != m["q"]:
        return None
    i, j, w = m["i"], m["j"], m["w"]
    if i == j or i in m["p"] or j in m["p"]:
        return None
    if w == i + j:
        return False
    if w == j + i:
        return True
    return None


def einsum_as_matmul(model: onnx.ModelProto) -> int:
    """Rewrite, in place, every top-level ``Einsum`` that multiplies by a constant 2-D initializer as a ``MatMul``;
    returns how many were rewritten."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    readers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    done = 0
    for n in g.node:
        if n.op_type != "Einsum" or n.domain not in ("", "ai.onnx") or len(n.input) != 2:
            continue
        eq = next((a.s.decode() for a in n.attribute if a.name == "equation"), "")
        transposed = _matmul_form(eq)
        w = inits.get(n.input[1])
        if transposed is None or w is None or len(w.dims) != 2:
            continue
        weight = n.input[1]
        if transposed:
            name = f"{weight}__einsum_T"
            if name not in inits:
                t = numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(w).T), name)
                g.initializer.append(t)
                inits[name] = t
            weight = name
        n.op_type = "MatMul"
        del n.attribute[:]
        n.input[1] = weight
        done += 1
    return done


__all__ = ["einsum_as_matmul"]
