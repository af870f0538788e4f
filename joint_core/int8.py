"""Opt-in int8 for a ViT technical branch on CPU: ``NaturalnessScorer(..., int8=True)``,
``joint score --int8``.

Dynamic int8 (PyTorch's ``quantize_dynamic``, one weight scale per output channel) quantises each
linear layer's input with one scale for the whole tensor. CLIP's activations have outlier
channels, so on the default model plain int8 reorders images (SRCC 0.85-0.91 with the float
scores, naturalness moved by up to 1.1). Smoothing first (SmoothQuant, Xiao et al. 2023) moves
that difficulty into the weights: each linear layer's input channel ``j`` is divided by
``s_j = max|x_j|^a / max|w_j|^(1-a)`` and the weight's column ``j`` multiplied by it (the same
function in float), folded into the LayerNorm before ``qkv`` and ``fc1`` and an explicit scale
before ``proj``. The MLP's second layer ``fc2``, whose post-GELU input resists smoothing, stays
in float. Measured on the default (v3.1, 2 CPU cores): 1.67-1.72x faster, SRCC 0.997-1.000 with
the float scores, naturalness moved by at most 0.11 (``benchmarks/default_cpu_variants.py``,
docs/fast-model.md).

The activation maxima come from seeded synthetic frames (:func:`calibration_frames`), so every
load makes the same int8 model and no calibration file ships. On CPU the scorer runs each image
alone, so the per-tensor scales are per image: scores are the same alone or in any batch.
"""

from __future__ import annotations

import importlib
import math
import warnings
from typing import Dict, List, Sequence

import torch
from torch import Tensor, nn

ALPHA = 0.75              # SmoothQuant's migration strength, chosen on the benchmark's images
KEEP_FLOAT = ("fc2",)     # layers left in float
CALIBRATION_FRAMES = 16
CALIBRATION_SIZE = 512


class InputScale(nn.Module):
    """Multiplies its input by a fixed per-channel factor (smoothing a layer with no norm before it)."""

    def __init__(self, factor: Tensor):
        super().__init__()
        self.register_buffer("factor", factor)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor


def vit_blocks(backbone: nn.Module, name: str) -> List[nn.Module]:
    """The transformer blocks of a timm ViT ``backbone`` (``norm1``, ``attn.qkv``, ``attn.proj``,
    ``norm2``, ``mlp.fc1``, ``mlp.fc2``), or a ValueError naming ``name``, the backbone."""
    blocks = list(getattr(backbone, "blocks", None) or [])
    parts = ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")

    def has(block: nn.Module, path: str) -> bool:
        m = block
        for p in path.split("."):
            m = getattr(m, p, None)
        return isinstance(m, (nn.Linear, nn.LayerNorm))

    if not blocks or not all(has(b, p) for b in blocks for p in parts):
        raise ValueError(f"int8 is for a vision transformer technical branch (timm ViT blocks); this model's is "
                         f"{name!r}: score it without int8")
    return blocks


def calibration_frames(count: int = CALIBRATION_FRAMES, size: int = CALIBRATION_SIZE, seed: int = 0) -> List[Tensor]:
    """``count`` photo-like uint8 ``[3, size, size]`` frames (smooth colour fields, discs with hard
    edges, sensor-like noise), the same for the same seed on every machine."""
    g = torch.Generator().manual_seed(seed)

    def u(lo: float, hi: float, *shape: int) -> Tensor:
        return lo + (hi - lo) * torch.rand(shape or (1,), generator=g)

    yy, xx = torch.meshgrid(torch.arange(size) / size, torch.arange(size) / size, indexing="ij")
    out = []
    for _ in range(count):
        img = torch.zeros(3, size, size)
        for _ in range(6):
            wave = 0.5 + 0.5 * torch.sin(2 * math.pi * (u(0.5, 4) * xx + u(0.5, 4) * yy) + u(0, 6.3))
            img += u(0.2, 1.0, 3)[:, None, None] * wave
        for _ in range(4):
            cx, cy, r = u(0, 1), u(0, 1), u(0.05, 0.3)
            disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            img = torch.where(disc, u(0, 6, 3)[:, None, None], img)
        img = img / img.max() * 235 + 4 * torch.randn(img.shape, generator=g)
        out.append(img.round().clamp(0, 255).to(torch.uint8))
    return out


def activation_maxima(backbone: nn.Module, inputs: Sequence[Tensor]) -> Dict[nn.Linear, Tensor]:
    """Per input channel, the largest ``|x|`` every linear layer of ``backbone`` sees on ``inputs``
    (each a backbone input batch)."""
    amax: Dict[nn.Linear, Tensor] = {}

    def hook(mod: nn.Module, args, output) -> None:
        a = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(0)
        amax[mod] = torch.maximum(amax[mod], a) if mod in amax else a

    hooks = [m.register_forward_hook(hook) for m in backbone.modules() if isinstance(m, nn.Linear)]
    try:
        with torch.inference_mode():
            for x in inputs:
                backbone(x)
    finally:
        for h in hooks:
            h.remove()
    return amax


@torch.no_grad()
def smooth(blocks: Sequence[nn.Module], amax: Dict[nn.Linear, Tensor], alpha: float = ALPHA) -> None:
    """SmoothQuant-style smoothing of every block's ``qkv``, ``fc1`` and ``proj``, in place: the
    blocks compute the same function, with inputs easier to quantise."""
    for block in blocks:
        for norm, parent, attr in ((block.norm1, block.attn, "qkv"), (block.norm2, block.mlp, "fc1"),
                                   (None, block.attn, "proj")):
            lin = getattr(parent, attr)
            a = amax[lin].clamp(min=1e-5)
            s = (a ** alpha / lin.weight.abs().amax(0).clamp(min=1e-5) ** (1 - alpha)).clamp(min=1e-5)
            lin.weight.mul_(s)
            if norm is not None:
                norm.weight.div_(s)
                norm.bias.div_(s)
            else:
                setattr(parent, attr, nn.Sequential(InputScale(1 / s), lin))


def quantize_backbone(backbone: nn.Module, name: str, inputs: Sequence[Tensor], alpha: float = ALPHA,
                      keep_float: Sequence[str] = KEEP_FLOAT) -> nn.Module:
    """The int8 copy of a timm ViT ``backbone`` (float32, CPU): smoothed on the activation maxima
    of ``inputs`` (backbone input batches), then every linear layer but those named in
    ``keep_float`` quantised dynamically to int8 with per-channel weight scales. ``backbone`` is
    modified (smoothed) in place; use the returned module."""
    try:   # looked up when used: a torch that drops eager-mode quantisation must not break importing joint_core
        ao = importlib.import_module("torch.ao.quantization")
        per_channel, quantize_dynamic = ao.per_channel_dynamic_qconfig, ao.quantize_dynamic
    except (ImportError, AttributeError) as e:  # pragma: no cover - a torch without it
        raise RuntimeError(f"this PyTorch has no dynamic int8 quantisation ({e}); score without int8") from None
    blocks = vit_blocks(backbone, name)
    smooth(blocks, activation_maxima(backbone, inputs), alpha)
    spec = {n: per_channel for n, m in backbone.named_modules()
            if isinstance(m, nn.Linear) and not set(n.split(".")) & set(keep_float)}
    with warnings.catch_warnings():   # torch.ao marks eager-mode quantisation deprecated; it still works
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(backbone, spec, dtype=torch.qint8)
