"""Draw score captions onto ComfyUI images (for the preview node). Presentation only."""

from __future__ import annotations

from typing import List, Sequence

import numpy as np
import torch
from torch import Tensor

from joint_core.preprocess.pipeline import to_uint8


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def to_pil(images: Tensor) -> List["object"]:
    """``[B, H, W, C]`` float in [0, 1] -> RGB PIL images (alpha and extra channels dropped)."""
    from PIL import Image

    arr = to_uint8(images[..., :3].detach().cpu()).numpy()
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return [Image.fromarray(a) for a in arr]


def draw_captions(images: Tensor, captions: Sequence[str]) -> Tensor:
    """Return a copy of ``images`` (``[B, H, W, C]``, float in [0, 1]) with ``captions[i]``
    written on a dark band across the top of image ``i``."""
    from PIL import ImageDraw

    if images.shape[0] != len(captions):
        raise ValueError(f"{images.shape[0]} images but {len(captions)} captions")
    out = images.detach().float().cpu().clone()
    for i, (img, text) in enumerate(zip(to_pil(out), captions)):
        w, h = img.size
        font = _font(max(9, min(w // 24, h // 8, 48)))
        draw = ImageDraw.Draw(img, "RGBA")
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        pad = max(2, (bottom - top) // 4)
        band = min(h, bottom - top + 2 * pad)
        draw.rectangle((0, 0, w, band), fill=(0, 0, 0, 170))
        draw.text((pad - left, pad - top), text, fill=(255, 255, 255, 255), font=font)
        drawn = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
        out[i, :band, :, :3] = drawn[:band, :, : out.shape[-1]] if out.shape[-1] < 3 else drawn[:band]
    return out
