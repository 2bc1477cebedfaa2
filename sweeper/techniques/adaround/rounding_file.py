"""AdaRound's result on disk: the learned integers per (weight, bits) in ``rounding.npz``, which rounding the
step kept and at what precision; read back by every later step (the experiment's ``rounding`` key)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sweeper.errors import SweeperError
from sweeper.model.graph import ModelGraph

ROUNDING_FILE = "rounding.npz"


def save_rounding(path: Path, rounding: dict[tuple[str, int], np.ndarray], kept: str, precision: str) -> None:
    """The learned integers per (weight, bits), with which rounding the step kept and at what precision."""
    keys = sorted(rounding)
    arrays = {f"q{i}": rounding[k] for i, k in enumerate(keys)}
    np.savez_compressed(path, names=np.array([k[0] for k in keys], dtype=str),
                        bits=np.array([k[1] for k in keys], np.int64), kept=np.array(kept),
                        precision=np.array(precision), **arrays)


def load_rounding(path: str | Path, learned: bool = False, graph: ModelGraph | None = None
                  ) -> dict[tuple[str, int], np.ndarray]:
    """The integers to store the weights as after an AdaRound step: ``path`` is its folder or its
    ``rounding.npz``. Empty when the step kept rounding to nearest (nothing to set), unless ``learned``,
    which returns what AdaRound learned either way. With ``graph``, every weight must be one of its weights,
    of the same shape. Problems are :class:`~sweeper.errors.SweeperError` naming the file."""
    p = Path(path)
    if p.is_dir():
        p = p / ROUNDING_FILE
    if not p.is_file():
        raise SweeperError(str(path), f"no AdaRound rounding here: expected {ROUNDING_FILE} or the adaround folder "
                                      "that holds it (written by `sweeper adaround`)")
    try:
        with np.load(p, allow_pickle=False) as z:
            names, bits, kept = list(z["names"]), list(z["bits"]), str(z["kept"])
            out = {(str(n), int(b)): z[f"q{i}"].astype(np.int64) for i, (n, b) in enumerate(zip(names, bits, strict=True))}
    except (KeyError, ValueError, OSError) as exc:
        raise SweeperError(str(p), f"not an AdaRound rounding file ({exc})") from None
    for (name, _), q in out.items() if graph is not None else ():
        if name not in graph.weight_quantizers or graph.weight_array(name).shape != q.shape:
            raise SweeperError(str(p), f"weight {name!r} {q.shape} is not a weight of this model (AdaRound ran on "
                                       "another model or preparation): run `sweeper adaround` on this one")
    return out if learned or kept == "adaround" else {}
