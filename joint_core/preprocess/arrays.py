"""Numpy arrays and torch tensors -> per-image RGB ``[3, H, W]`` items: dtypes and value
ranges checked, the channel layout read (never guessed silently), batches split, the size rules
of :class:`~.items.ImageLimits` applied."""

from __future__ import annotations

import math
import warnings
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ..errors import ImageInputError
from .flags import finish_item
from .items import (AmbiguousLayoutWarning, ImageItem, ImageLimits, aspect_box, aspect_note, describe, first_line,
                    reduce_factors)

# values a little outside [0, 1] (a VAE decode, a resampling overshoot) are clamped;
# anything further out is an error, usually a 0..255 float image
RANGE_SLACK = 1e-2


def numpy_to_tensor(arr: np.ndarray, label: str) -> Tensor:
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:   # np.array: a 0-d array divides to a numpy scalar, not an array
        return torch.from_numpy(np.array(arr / np.float32(65535.0), dtype=np.float32, order="C"))
    if arr.dtype.kind not in "uif":
        raise ImageInputError(f"{label}: unsupported array dtype {arr.dtype}")
    if arr.dtype.kind in "ui" and arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ImageInputError(f"{label}: integer array of dtype {arr.dtype} has values outside "
                                  "0..255; pass uint8, uint16 or floats in [0, 1]")
        arr = arr.astype(np.uint8)
    arr = np.ascontiguousarray(arr)
    if not arr.flags.writeable or any(s < 0 for s in arr.strides):
        # read-only arrays (np.asarray(PIL)); a reversed one-element view counts as contiguous
        # to numpy but keeps its negative stride, which torch refuses
        arr = np.array(arr, order="C")
    return torch.from_numpy(arr)


def _check_tensor(t: Tensor, label: str) -> Tensor:
    """Tensors without ordinary data (meta, sparse, nested, quantized) are named errors."""
    if t.device.type == "meta":
        raise ImageInputError(f"{label}: tensor is on the meta device, it holds no pixel values")
    if getattr(t, "is_nested", False):
        raise ImageInputError(f"{label}: nested tensors are not supported; pass a list of tensors")
    if t.layout != torch.strided:
        raise ImageInputError(f"{label}: {str(t.layout).replace('torch.', '')} tensors are not supported; "
                              "pass a dense tensor (.to_dense())")
    if t.is_quantized:
        raise ImageInputError(f"{label}: quantized tensors are not supported; pass .dequantize()")
    return t.detach()


def split_batch(t: Tensor, label: str, layout: str, convention: str, limits: ImageLimits
                 ) -> List[ImageItem]:
    """Turn a 2-D/3-D/4-D tensor into per-image ``[3, H, W]`` items."""
    src = f"{label} ({describe(t)})"
    try:
        t = _check_tensor(t, label)
        batch = _to_bchw(t, label, layout, convention)
    except ImageInputError as e:
        return [ImageItem(src, error=str(e))]
    except Exception as e:  # noqa: BLE001 - one odd tensor never takes the call down
        return [ImageItem(src, error=f"{label}: cannot read tensor ({type(e).__name__}: {first_line(e)})")]
    items = []
    for i in range(batch.shape[0]):
        name = f"{label}[{i}]" if (t.dim() == 4) else label
        try:
            x, note = _bound_tensor(_to_rgb(batch[i], name), limits)
            items.append(finish_item(name, x, note, limits))
        except ImageInputError as e:
            items.append(ImageItem(name, error=str(e)))
        except Exception as e:  # noqa: BLE001
            items.append(ImageItem(name, error=f"{name}: cannot read image ({type(e).__name__}: "
                                               f"{first_line(e)})"))
    return items


def _to_bchw(t: Tensor, label: str, layout: str, convention: str) -> Tensor:
    if t.dtype == torch.bool:
        t = t.to(torch.uint8) * 255
    if t.is_complex():
        raise ImageInputError(f"{label}: complex tensors are not images")
    if t.dim() == 2:
        return t[None, None]
    if t.dim() == 3:
        return _channels_first(t, 0, label, layout, convention)[None]
    if t.dim() == 4:
        if t.shape[0] == 0:
            return t.new_zeros((0, 3, 1, 1))
        return _channels_first(t, 1, label, layout, convention)
    raise ImageInputError(f"{label}: expected a 2-D, 3-D or 4-D image tensor, got shape {tuple(t.shape)}")


def _channels_first(t: Tensor, c: int, label: str, layout: str, convention: str) -> Tensor:
    """Move the channel dimension to position ``c`` (0 for ``[C,H,W]``, 1 for ``[B,C,H,W]``).

    ``layout="auto"``: when only one of dimension ``c`` and the last one holds 1, 3 or 4 values,
    that one is the channels; when both do, the container's ``convention`` decides (torch:
    channels first; numpy: channels last) and an :class:`AmbiguousLayoutWarning` says so."""
    shape = tuple(t.shape)
    ok = (1, 3, 4)
    first, last = shape[c] in ok, shape[-1] in ok
    if layout == "auto":
        if first and last:
            layout = convention
            other = "channels_last" if convention == "channels_first" else "channels_first"
            kind = "a torch tensor" if convention == "channels_first" else "a numpy array"
            warnings.warn(f"{label}: shape {shape} could be channels-first or channels-last; read as "
                          f"{layout.replace('_', '-')} because it is {kind}; pass layout='{other}' to "
                          "read it the other way", AmbiguousLayoutWarning, stacklevel=5)
        elif first or last:
            layout = "channels_first" if first else "channels_last"
        else:
            b = "B," if c == 1 else ""
            raise ImageInputError(f"{label}: cannot tell channels in shape {shape}; expected [{b}3,H,W] or "
                                  f"[{b}H,W,3] (1 or 4 channels also accepted)")
    if layout == "channels_first":
        if not first:
            raise ImageInputError(f"{label}: layout='channels_first' but shape {shape} has {shape[c]} "
                                  "channels (expected 1, 3 or 4)")
        return t
    if not last:
        raise ImageInputError(f"{label}: layout='channels_last' but shape {shape} has {shape[-1]} "
                              "channels (expected 1, 3 or 4)")
    return t.movedim(-1, c)


def _to_rgb(x: Tensor, name: str) -> Tensor:
    """``[C, H, W]`` (C in 1, 3, 4) -> ``[3, H, W]`` uint8 or float (range checked, not yet
    clamped: :func:`_bound_tensor` clamps after shrinking)."""
    c, h, w = x.shape
    if h == 0 or w == 0:
        raise ImageInputError(f"{name}: empty image ({w}x{h})")
    if c == 1:
        x = x.expand(3, -1, -1)
    elif c == 4:
        x = x[:3]
    elif c != 3:
        raise ImageInputError(f"{name}: expected 1, 3 or 4 channels, got {c}")
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        if x.numel() and (int(x.min()) < 0 or int(x.max()) > 255):
            raise ImageInputError(f"{name}: integer tensor of dtype {x.dtype} has values outside "
                                  "0..255; pass uint8 or floats in [0, 1]")
        return x.to(torch.uint8)
    check_float_range(x, name, hint=True)
    return x


def _bound_tensor(x: Tensor, limits: ImageLimits) -> Tuple[Tensor, Optional[str]]:
    """The aspect-ratio and size rules for an in-memory ``[3, H, W]`` image (the same rules as
    for files): centre-crop beyond ``max_aspect``, shrink by integer factors beyond
    ``2 * max_side``. 8-bit images shrink as Pillow's ``reduce`` does (so a file and its pixels
    as an array give the same tensor), float images by the mean of each box."""
    h, w = x.shape[-2:]
    box = aspect_box(w, h, limits)
    note = aspect_note(w, h, box, limits)
    x = x[:, box[1]:box[1] + box[3], box[0]:box[0] + box[2]]
    fx, fy = reduce_factors(box[2], box[3], limits)
    if fx > 1 or fy > 1:
        if x.dtype == torch.uint8:
            arr = x.permute(1, 2, 0).cpu().contiguous().numpy()
            arr = np.array(Image.fromarray(arr, "RGB").reduce((fx, fy)), dtype=np.uint8)
            x = torch.from_numpy(arr).permute(2, 0, 1).to(x.device)
        else:
            x = F.avg_pool2d(x[None].float(), (fy, fx), (fy, fx), ceil_mode=True)[0]
    if x.dtype == torch.uint8:
        return x.contiguous(), note
    return x.float().clamp(0.0, 1.0).contiguous(), note


def check_float_range(x: Tensor, name: str, hint: bool) -> None:
    """NaN / infinite values and values outside [0, 1] (beyond a small slack) are errors. One
    reduction pass (no full-size temporaries) unless something is wrong."""
    if x.numel() == 0:
        return
    lo, hi = (float(v) for v in torch.aminmax(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        bad = int((~torch.isfinite(x)).sum())
        raise ImageInputError(f"{name}: {bad} NaN or infinite value(s); cannot score")
    if lo < -RANGE_SLACK or hi > 1.0 + RANGE_SLACK:
        extra = " (looks like 0..255: divide by 255)" if hint and hi > 2.0 else ""
        raise ImageInputError(f"{name}: float values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]{extra}")


def finish_float(x: Tensor, name: str) -> Tensor:
    check_float_range(x, name, hint=False)
    return x.clamp(0.0, 1.0).contiguous()
