"""Synthetic degradations for the technical branch's ranking prior (RankIQA-style).

A copy of an image with added noise or blur is technically worse than the image itself, whatever
its MOS. ``loss.distortion_rank`` turns this into a margin ranking term on the technical score,
which teaches distortions that a rating set lacks (CLIVE's authentic distortions hold little
strong sensor noise). Batched in torch on the training device; seeded by the step's generator.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

NOISE_SIGMA = (10 / 255, 50 / 255)   # additive Gaussian noise, std in [0, 1] units
BLUR_SIGMA = (1.0, 3.0)              # Gaussian blur, std in pixels


def degrade(x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """A degraded copy of ``x`` (``[B, 3, H, W]`` in [0, 1]): each image gets Gaussian noise or
    a Gaussian blur (half the batch each, at random), of random strength."""
    b = x.shape[0]
    u = torch.rand(b, 2, generator=generator).to(x.device, x.dtype)
    noisy = torch.rand(b, generator=generator).to(x.device) < 0.5
    sigma_n = NOISE_SIGMA[0] + u[:, 0] * (NOISE_SIGMA[1] - NOISE_SIGMA[0])
    noise = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
    out_noise = (x + sigma_n.view(b, 1, 1, 1) * noise).clamp(0, 1)
    out_blur = gaussian_blur(x, BLUR_SIGMA[0] + u[:, 1] * (BLUR_SIGMA[1] - BLUR_SIGMA[0]))
    return torch.where(noisy.view(b, 1, 1, 1), out_noise, out_blur)


def gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Separable Gaussian blur with a per-image ``sigma`` ``[B]`` (reflect padding)."""
    b, c, h, w = x.shape
    radius = int(math.ceil(3 * float(sigma.max())))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t.view(1, -1) / sigma.view(-1, 1)) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)          # [B*C, 2r+1]
    y = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(b * c, 1, 1, -1), groups=b * c)
    y = F.conv2d(y, k.view(b * c, 1, -1, 1), groups=b * c)
    return y.view(b, c, h, w)
