"""Low-frequency map: Ambrosio-Tortorelli minimisation (paper eq. 8) in batched torch.

The Mumford-Shah functional is approximated by alternating two linear solves per outer
iteration, each by conjugate gradients with a fixed iteration budget, as in the reference
Python implementation that the authors used:

* edges ``v``:  ``v * (alpha * |grad f|^2 + beta / (4 eps)) - eps * beta * lap(v) = beta / (4 eps)``,
  then ``e = v^2``;
* image ``f``:  ``f - 2 alpha * (Dx(e * Dx f) + Dy(e * Dy f)) = g``,

with ``g`` each channel divided by its maximum, ``Dx``/``Dy`` the central differences
``[-1, 0, 1]`` (correlation) and ``lap`` the 5-point Laplacian, all with reflect-101 borders.
Each channel of the result is min-max stretched to 0..255 and truncated to 8 bits, then the
channels are stretched jointly once more (rounded). Every channel of every image is an
independent system, so a whole batch is solved at once on any device.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import LowFrequencyConfig


def _pad(x: Tensor) -> Tensor:
    return F.pad(x, (1, 1, 1, 1), mode="reflect")  # torch's "reflect" is reflect-101


def _grad_x(x: Tensor) -> Tensor:
    p = _pad(x)
    return p[..., 1:-1, 2:] - p[..., 1:-1, :-2]


def _grad_y(x: Tensor) -> Tensor:
    p = _pad(x)
    return p[..., 2:, 1:-1] - p[..., :-2, 1:-1]


def _laplacian(x: Tensor) -> Tensor:
    p = _pad(x)
    return (p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]
            - 4.0 * x)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).flatten(1).sum(1)


def conjugate_gradient(matvec: Callable[[Tensor], Tensor], b: Tensor, max_iter: int,
                       rtol: float) -> Tensor:
    """Batched CG from ``x0 = 0`` with SciPy's stopping rule: system ``i`` stops as soon as
    ``||r_i|| < rtol * ||b_i||`` (checked before each iteration), else after ``max_iter`` steps.

    ``b`` is ``[N, ...]``: N independent symmetric systems sharing ``matvec``.
    """
    n = b.shape[0]
    view = (n,) + (1,) * (b.dim() - 1)
    x = torch.zeros_like(b)
    r = b.clone()
    atol = rtol * b.flatten(1).norm(dim=1)
    running = torch.ones(n, dtype=torch.bool, device=b.device)
    p = torch.zeros_like(b)
    rho_prev = torch.ones(n, dtype=b.dtype, device=b.device)
    for it in range(max_iter):
        running = running & (r.flatten(1).norm(dim=1) >= atol) & (atol > 0)
        if not bool(running.any()):
            break
        rho = _dot(r, r)
        beta = torch.where(running, rho / torch.where(running, rho_prev, 1.0), 0.0)
        p = r + (beta.view(view) * p if it > 0 else 0.0)
        q = matvec(p)
        pq = _dot(p, q)
        alpha = torch.where(running, rho / torch.where(running, pq, 1.0), 0.0).view(view)
        x = x + alpha * p
        r = r - alpha * q
        rho_prev = rho
    return x


def _minmax_255(x: Tensor) -> Tensor:
    """Stretch each ``[N, ...]`` entry to 0..255 (a constant entry becomes 0)."""
    flat = x.flatten(1)
    lo = flat.min(1).values
    hi = flat.max(1).values
    span = hi - lo
    scale = torch.where(span > 0, 255.0 / torch.where(span > 0, span, 1.0), 0.0)
    view = (x.shape[0],) + (1,) * (x.dim() - 1)
    return (x - lo.view(view)) * scale.view(view)


def ambrosio_tortorelli(channels: Tensor, cfg: LowFrequencyConfig) -> Tensor:
    """Solve the AT model for ``[N, 1, H, W]`` single-channel images (any non-negative scale).

    Returns the smoothed images ``f`` (each scaled by its channel maximum, unstretched).
    """
    g = channels
    peak = g.flatten(1).max(1).values.clamp_min(torch.finfo(g.dtype).tiny)
    g = g / peak.view(-1, 1, 1, 1)
    f = g
    a, beta, eps = cfg.alpha, cfg.beta, cfg.epsilon
    add_const = beta / (4.0 * eps)
    for _ in range(cfg.iterations):
        grad_mag = _grad_x(f) ** 2 + _grad_y(f) ** 2
        diag = grad_mag * a + add_const

        def edge_op(v: Tensor, diag: Tensor = diag) -> Tensor:
            return v * diag - (eps * beta) * _laplacian(v)

        v = conjugate_gradient(edge_op, torch.full_like(g, add_const), cfg.cg_max_iter, cfg.cg_rtol)
        e = v * v

        def image_op(u: Tensor, e: Tensor = e) -> Tensor:
            return u - (2.0 * a) * (_grad_x(e * _grad_x(u)) + _grad_y(e * _grad_y(u)))

        f = conjugate_gradient(image_op, g, cfg.cg_max_iter, cfg.cg_rtol)
    return f


def low_frequency_map(images: Tensor, cfg: LowFrequencyConfig,
                      compute_dtype: torch.dtype = torch.float32) -> Tensor:
    """Low-frequency maps of a batch ``[B, 3, H, W]`` in [0, 1]; returns the same shape, in
    [0, 1], quantised to 8-bit levels like the reference output."""
    if images.dim() != 4:
        raise ValueError(f"expected [B, C, H, W], got {tuple(images.shape)}")
    b, c, h, w = images.shape
    if h < 2 or w < 2:
        return images.clone()  # reflect padding needs 2 pixels; nothing to smooth anyway
    x = images.to(compute_dtype).reshape(b * c, 1, h, w)
    f = ambrosio_tortorelli(x, cfg)
    f = torch.floor(_minmax_255(f).clamp(0, 255))          # per-channel stretch, uint8 cast
    merged = f.reshape(b, c, h, w)
    merged = torch.round(_minmax_255(merged)).clamp(0, 255)  # joint stretch of the merged image
    return (merged / 255.0).to(images.dtype)
