"""Degenerate-image flags: nearly uniform or nearly black frames, pure noise, images too small
to judge (:func:`degenerate_reason`), and :func:`finish_item`, which puts them on an item."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from .items import MIN_SIDE, ImageItem, ImageLimits

_UNIFORM_FRACTION = 0.97      # this share of pixels within _UNIFORM_TOL of the median colour
_UNIFORM_TOL = 3.0 / 255.0
_DARK_LEVEL = 8.5 / 255.0     # "nearly black": 99% of pixels at most 8/255 bright
_NOISE_CORRELATION = 0.15     # neighbouring pixels of real images correlate far more (>= 0.3)
_ANALYSIS_SIDE = 256          # statistics on at most 256 x 256 samples


def finish_item(source: str, t: Tensor, note: Optional[str], limits: ImageLimits) -> ImageItem:
    """The item of a decoded image: its notes and, when asked, its degenerate-image flag."""
    notes = [note] if note else []
    if limits.flag_degenerate:
        reason = degenerate_reason(t)
        if reason:
            notes.append(reason)
    return ImageItem(source, t, warning=f"{source}: " + "; ".join(notes) if notes else None)


def degenerate_reason(x: Tensor) -> Optional[str]:
    """Why an RGB ``[3, H, W]`` image (uint8, or float in [0, 1]) is degenerate, or None.

    - **too small**: a side shorter than :data:`MIN_SIDE` pixels;
    - **nearly uniform**: at least 97% of the pixels within 3/255 of the median colour (flat
      frames, a black safety-checker frame, a blank canvas with a speck);
    - **nearly black**: 99% of the pixels at most 8/255 bright in every channel;
    - **pure noise**: neighbouring pixels uncorrelated (correlation < 0.15 both across and down,
      on the central 256 x 256 pixels at full resolution); real photographs, even textures like
      grass or gravel, correlate far more.

    Cheap and deterministic: statistics on at most 256 x 256 samples (a strided view of the
    whole image, and its central crop), copied to the CPU and computed with NumPy, whose
    selection (``partition``) is several times faster than torch's median and quantile on the
    CPU and which runs no torch thread team, so that decoding threads can flag images while the
    model runs (about 1 ms an image)."""
    h, w = x.shape[-2:]
    if min(h, w) < MIN_SIDE:
        return (f"flagged: {w}x{h} is too small to judge (under {MIN_SIDE} px on a side); "
                "its score is not meaningful and it ranks last")
    scale = np.float32(255.0 if x.dtype == torch.uint8 else 1.0)
    sy, sx = -(-h // _ANALYSIS_SIDE), -(-w // _ANALYSIS_SIDE)
    s = _to_numpy(x[:, ::sy, ::sx]).reshape(3, -1) / scale              # a strided view of the whole image
    k = (s.shape[1] - 1) // 2                                           # the lower median, as torch.median
    med = np.partition(s, k, axis=1)[:, k]
    near = float((np.abs(s - med[:, None]).max(0) <= _UNIFORM_TOL).mean())
    dark = _quantile(s.max(0), 0.99)
    ch, cw = min(h, _ANALYSIS_SIDE), min(w, _ANALYSIS_SIDE)
    top, left = (h - ch) // 2, (w - cw) // 2
    c = _to_numpy(x[:, top:top + ch, left:left + cw]) / scale
    lum = np.float32(0.299) * c[0] + np.float32(0.587) * c[1] + np.float32(0.114) * c[2]
    corr_max = max(_correlation(lum[:, :-1], lum[:, 1:]), _correlation(lum[:-1], lum[1:]))
    rgb = tuple(int(round(float(v) * 255)) for v in med)
    if near >= _UNIFORM_FRACTION:
        return (f"flagged: nearly uniform ({near:.0%} of the pixels are about rgb{rgb}); "
                "its score is not meaningful and it ranks last")
    if dark <= _DARK_LEVEL:
        return "flagged: nearly black; its score is not meaningful and it ranks last"
    if corr_max < _NOISE_CORRELATION:
        return (f"flagged: looks like pure noise (neighbouring pixels correlate {corr_max:.2f}); "
                "its score is not meaningful and it ranks last")
    return None


def _to_numpy(t: Tensor) -> np.ndarray:
    """A (small) view of an image -> float32 NumPy on the CPU (from any device and dtype). The
    conversion is NumPy's, so flagging runs no torch thread team (see the docstring above)."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.dtype not in (torch.uint8, torch.float32, torch.float16, torch.float64):
        t = t.float()
    return t.numpy().astype(np.float32)


def _quantile(v: np.ndarray, q: float) -> float:
    """``torch.quantile(v, q)`` (linear interpolation) of a 1-D array, by selection."""
    pos = q * (v.size - 1)
    lo = int(pos)
    hi = min(lo + 1, v.size - 1)
    part = np.partition(v, (lo, hi))
    return float(part[lo] + (pos - lo) * (part[hi] - part[lo]))


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt(float((a * a).sum()) * float((b * b).sum())))
    return float((a * b).sum()) / den if den > 0 else 1.0
