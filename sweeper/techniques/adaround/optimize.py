"""AdaRound's optimisation of one layer: the weight on its grid with a learned up/down offset (rectified
sigmoid of ``V``), the rounding regulariser and its ``beta`` schedule, the reconstruction loss, and Adam on
``V`` with the chain rule written out. PyTorch is imported inside the functions."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sweeper.quant.encoding import Encoding
from sweeper.techniques.activation_sampler import Samples

ZETA, GAMMA = 1.1, -0.1


@dataclass(frozen=True)
class AdaRoundConfig:
    """AdaRound's hyper-parameters (AIMET's defaults) and the activation cache's memory budget."""

    iterations: int = 1000
    batch_size: int = 32
    reg: float = 0.01
    beta: tuple[float, float] = (20.0, 2.0)
    warm_start: float = 0.2
    lr: float = 1e-3
    memory_mb: float = 1024.0  # cached activations held in memory; the rest streams from disk
    seed: int = 0



# -- the quantizer on the weight's grid -----------------------------------------------------------------
class GridQuantizer:
    """Weight ``w`` on the grid of ``enc``: ``floor(w / s) + zp`` plus a learned 0 or 1, saturated to the grid."""

    def __init__(self, w: np.ndarray, enc: Encoding) -> None:
        w = np.asarray(w, np.float32)
        scale, zp = enc._broadcast(w)  # noqa: SLF001 - the encoding's own broadcast along its axis
        ratio = w / scale  # float32, as QuantizeLinear and Encoding.quantize divide
        floor = np.floor(ratio)
        self.frac = (ratio - floor).astype(np.float32)
        self.base = (floor + zp).astype(np.float32)
        self.scale = np.broadcast_to(scale, w.shape).astype(np.float32) if scale.ndim else scale.astype(np.float32)
        self.zp = zp.astype(np.float32)
        self.qmin, self.qmax = float(enc.qmin), float(enc.qmax)

    def initial_v(self) -> np.ndarray:
        """``V`` with ``h(V)`` = the fractional part of ``w / s`` (so hard rounding starts at nearest)."""
        return (-np.log((ZETA - GAMMA) / (self.frac.astype(np.float64) - GAMMA) - 1.0)).astype(np.float32)

    def hard(self, v: np.ndarray) -> np.ndarray:
        """The integers: round up where ``V >= 0`` (``h >= 0.5``), down elsewhere."""
        return np.clip(self.base + (v >= 0), self.qmin, self.qmax).astype(np.int64)

    def nearest(self) -> np.ndarray:
        """Hard rounding of the initial ``V``: rounding to nearest (ties up rather than to even)."""
        return self.hard(self.initial_v())

    def soft_parts(self) -> tuple[np.ndarray, np.ndarray]:
        """``(w0, g)`` with the soft weight ``w = w0 + h * g`` for offsets ``h`` in [0, 1]: exactly
        ``(clamp(floor(w / s) + zp + h, qmin, qmax) - zp) * s``, since ``g = s`` where ``floor + zp`` is in
        [qmin, qmax - 1] and 0 (saturated: constant) elsewhere."""
        inside = (self.base >= self.qmin) & (self.base <= self.qmax - 1)
        w0 = (np.clip(self.base, self.qmin, self.qmax) - self.zp) * self.scale
        return w0.astype(np.float32), np.where(inside, self.scale, 0.0).astype(np.float32)

    def soft_weight(self, h: np.ndarray) -> np.ndarray:
        """The float weight for offsets ``h`` in [0, 1]."""
        w0, g = self.soft_parts()
        return w0 + h * g


def rectified_sigmoid(v: Any) -> Any:
    """``h(V) = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)``: reaches 0 and 1 exactly (unlike a sigmoid)."""
    import torch

    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def beta_at(it: int, cfg: AdaRoundConfig) -> float:
    """AIMET's cosine annealing of ``beta`` from ``beta[0]`` at the end of the warm start to ``beta[1]``."""
    start, end = cfg.beta
    warm = cfg.warm_start * cfg.iterations
    rel = (it - warm) / max(cfg.iterations - warm, 1e-9)
    return end + 0.5 * (start - end) * (1.0 + math.cos(rel * math.pi))


def recon_loss(out: Any, target: Any, axis: int) -> Any:
    """AIMET's reconstruction error: squared L2 norm over the channel axis, mean over the rest."""
    import torch.nn.functional as F  # noqa: N812

    return F.mse_loss(out, target, reduction="sum") * (out.shape[axis] / max(out.numel(), 1))


# -- optimising one layer -------------------------------------------------------------------------------
class _Adam:
    """Adam on one tensor as ``torch.optim.Adam`` updates it (betas 0.9, 0.999; eps 1e-8): its fused CPU kernel
    (one pass instead of eight), without importing ``torch.optim`` (which imports TorchDynamo: seconds of
    start-up for a few lines of arithmetic)."""

    def __init__(self, param: Any, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        import torch

        self.p, self.lr, self.betas, self.eps = param, lr, betas, eps
        self.m, self.v = torch.zeros_like(param), torch.zeros_like(param)
        self.t = torch.zeros((), dtype=torch.float32)
        self.fused = getattr(torch, "_fused_adam_", None)

    def step(self, grad: Any) -> None:
        """One update of the parameter with ``grad``."""
        b1, b2 = self.betas
        self.t += 1
        if self.fused is not None:
            self.fused([self.p], [grad], [self.m], [self.v], [], [self.t], amsgrad=False, lr=self.lr, beta1=b1,
                       beta2=b2, weight_decay=0.0, eps=self.eps, maximize=False)
            return
        t = float(self.t)
        self.m.mul_(b1).add_(grad, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (self.v.sqrt() / math.sqrt(1 - b2**t)).add_(self.eps)
        self.p.addcdiv_(self.m, denom, value=-self.lr / (1 - b1**t))


def soft_rounding(v: Any, w0: Any, gscale: Any) -> tuple[Any, Any, Any, Any]:
    """``(w, sig, h_raw, h)``: the soft weight for ``V`` and the intermediates its gradient needs."""
    import torch

    sig = torch.sigmoid(v)
    h_raw = sig.mul(ZETA - GAMMA).add_(GAMMA)
    h = h_raw.clamp(0.0, 1.0)
    return torch.addcmul(w0, h, gscale), sig, h_raw, h


def grad_v(gw: Any, gscale: Any, sig: Any, h_raw: Any, h: Any, beta: float | None, reg: float) -> Any:
    """d(loss)/dV from d(reconstruction)/dw (``gw``, overwritten), with the regulariser when ``beta`` is set:
    the chain rule through the grid (``gscale``), the rectified sigmoid and ``reg * (1 - |2h - 1| ** beta)``,
    as autograd computes it (clamps pass the gradient on their closed range)."""
    gh = gw.mul_(gscale)
    if beta is not None:
        u = h.mul(2.0).sub_(1.0)
        mag = u.abs().log_().mul_(beta - 1.0).exp_()  # |u| ** (beta - 1): pow is 5x slower on CPU
        gh.sub_(mag.mul_(u.sign_()), alpha=2.0 * reg * beta)
    return gh.mul_(sig.mul(1.0 - sig).mul_((ZETA - GAMMA) * (h_raw == h)))


def optimize_rounding(forward: Callable[[Any, Any], Any], gq: GridQuantizer, samples: Samples, axis: int,
                      cfg: AdaRoundConfig) -> tuple[np.ndarray, float, float]:
    """Learn ``V`` for one layer (see the module docstring); returns ``V`` and the reconstruction loss of
    the first and the last iteration.

    Autograd runs through the layer only (the gradient of the reconstruction error with respect to the soft
    weight); the rest of the chain rule is written out (:func:`grad_v`): the same gradient in a third of the
    passes over the weights, which dominate the iteration of a layer with many weights and few outputs."""
    import torch

    w0, gscale = (torch.from_numpy(a) for a in gq.soft_parts())
    v = torch.from_numpy(gq.initial_v())
    adam = _Adam(v, cfg.lr)
    warm = cfg.warm_start * cfg.iterations
    first = last = float("nan")
    for it in range(cfg.iterations):
        x, y = samples.draw()
        with torch.no_grad():
            w, sig, h_raw, h = soft_rounding(v, w0, gscale)
        w.requires_grad_(True)
        recon = recon_loss(forward(x, w), y, axis)
        (gw,) = torch.autograd.grad(recon, [w])
        with torch.no_grad():
            adam.step(grad_v(gw, gscale, sig, h_raw, h, beta_at(it, cfg) if it >= warm else None, cfg.reg))
        last = float(recon.detach())
        if it == 0:
            first = last
    return v.numpy(), first, last


def round_loss(v: Any, beta: float, reg: float) -> Any:
    """The regulariser ``reg * sum(1 - |2 h(V) - 1| ** beta)`` (pushes every ``h`` to 0 or 1)."""
    return reg * (1.0 - (2.0 * rectified_sigmoid(v) - 1.0).abs().pow(beta)).sum()


def reconstruction_error(forward: Callable[[Any, Any], Any], w: np.ndarray, samples: Samples, axis: int) -> float:
    """The reconstruction error of weight ``w`` over all the calibration data."""
    import torch

    wt = torch.from_numpy(np.ascontiguousarray(w, np.float32))
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in samples.runs():
            err = (forward(x, wt) - y).pow(2).sum(axis)
            total += float(err.sum())
            count += err.numel()
    return total / max(count, 1)
