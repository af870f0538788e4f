"""Any image input -> a list of RGB tensors, one per image, each with its own error slot.

Accepted: a path (``str`` / ``os.PathLike``), a ``PIL.Image``, a numpy array (``HxW``,
``HxWxC``, ``CxHxW`` or a batch ``BxHxWxC``), a torch tensor (``[B,3,H,W]``, ``[B,H,W,3]`` - the
ComfyUI layout -, ``[3,H,W]``, ``[H,W,3]``, ``[H,W]``; float in [0, 1] or uint8), or a list /
tuple of any of these. Grayscale is replicated to RGB; alpha is dropped; 16-bit images are
scaled by 65535; CMYK, palette and other PIL modes are converted to RGB.

A bad item never raises here: it becomes an :class:`ImageItem` with ``error`` set and a
message that names the file or the input's position, so the other images can still be scored.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, List, Optional, Union

import numpy as np
import torch
from torch import Tensor

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")

# values a little outside [0, 1] (a VAE decode, a resampling overshoot) are clamped;
# anything further out is an error, usually a 0..255 float image
_RANGE_SLACK = 1e-2


class ImageInputError(ValueError):
    """An input that cannot be turned into an RGB image; the message names the input."""


@dataclass
class ImageItem:
    """One image: ``tensor`` is ``[3, H, W]`` (uint8, or float32 in [0, 1]) or ``None`` when
    ``error`` says why the input could not be read."""

    source: str
    tensor: Optional[Tensor] = None
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None


def describe(obj: Any) -> str:
    """A short description of an input for messages."""
    if isinstance(obj, (str, os.PathLike)):
        return str(obj)
    if isinstance(obj, Tensor):
        return f"tensor{tuple(obj.shape)}"
    if isinstance(obj, np.ndarray):
        return f"array{obj.shape}"
    return type(obj).__name__


def collect_images(images: Any) -> List[ImageItem]:
    """Flatten ``images`` into one :class:`ImageItem` per image (batches are split)."""
    if isinstance(images, (list, tuple)):
        items: List[ImageItem] = []
        for i, obj in enumerate(images):
            items.extend(_items_from(obj, label=f"input {i}"))
        return items
    if _is_image_like(images):
        return _items_from(images, label="input 0")
    raise TypeError(
        "images must be a path, a PIL image, a numpy array, a torch tensor or a list of them, "
        f"got {type(images).__name__}")


def _is_image_like(obj: Any) -> bool:
    from PIL import Image

    return isinstance(obj, (str, os.PathLike, Image.Image, np.ndarray, Tensor))


def _items_from(obj: Any, label: str) -> List[ImageItem]:
    from PIL import Image

    if isinstance(obj, (str, os.PathLike)):
        source = str(obj)
        try:
            return [ImageItem(source, load_image(obj))]
        except ImageInputError as e:
            return [ImageItem(source, error=str(e))]
    if isinstance(obj, Image.Image):
        source = getattr(obj, "filename", "") or f"{label} (PIL {obj.mode} {obj.size[0]}x{obj.size[1]})"
        try:
            return [ImageItem(source, pil_to_tensor(obj, source))]
        except ImageInputError as e:
            return [ImageItem(source, error=str(e))]
    if isinstance(obj, np.ndarray):
        try:
            t = _numpy_to_tensor(obj, label)
        except ImageInputError as e:
            return [ImageItem(f"{label} ({describe(obj)})", error=str(e))]
        return _split_batch(t, label, layout_hint="hwc")
    if isinstance(obj, Tensor):
        return _split_batch(obj, label, layout_hint=None)
    return [ImageItem(f"{label} ({describe(obj)})",
                      error=f"{label}: unsupported input type {type(obj).__name__}; expected a path, "
                            "PIL image, numpy array or torch tensor")]


# --------------------------------------------------------------------------------------------
# files and PIL images
# --------------------------------------------------------------------------------------------


def load_image(path: Union[str, os.PathLike]) -> Tensor:
    """Read an image file as an RGB ``[3, H, W]`` tensor (uint8, or float32 for 16-bit files)."""
    path = Path(path)
    if not path.exists():
        raise ImageInputError(f"{path}: no such file")
    if path.is_dir():
        raise ImageInputError(f"{path}: is a folder, not an image")
    return decode_image(path, str(path))


def decode_image(fp: Any, source: str) -> Tensor:
    """Decode an encoded image - a path, or a binary file object such as ``io.BytesIO`` over the
    bytes of a tar member or a Parquet cell - as an RGB ``[3, H, W]`` tensor. Every failure is an
    :class:`ImageInputError` naming ``source``."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp) as img:
                img.load()
                img = ImageOps.exif_transpose(img)
                return pil_to_tensor(img, source)
    except ImageInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageInputError(f"{source}: image is too large to decode safely ({e})") from None
    except UnidentifiedImageError:
        raise ImageInputError(f"{source}: not an image file, or a format Pillow cannot read") from None
    except Exception as e:  # any decoder failure (struct.error, IndexError, ...) is this file's fault
        raise ImageInputError(f"{source}: cannot decode image ({type(e).__name__}: {e})") from None


def load_one(obj: Union[str, os.PathLike, bytes, bytearray, memoryview], source: Optional[str] = None
             ) -> ImageItem:
    """One image file (a path) or one encoded image (bytes, named by ``source``) -> one
    :class:`ImageItem`; never raises. The per-item loader of the streaming data loader
    (:mod:`joint_core.stream`), which runs it in worker processes."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        name = source if source is not None else f"<{len(obj)} bytes>"
        try:
            return ImageItem(name, decode_image(io.BytesIO(obj), name))
        except ImageInputError as e:
            return ImageItem(name, error=str(e))
    return _items_from(obj, label=source or "input 0")[0]


def pil_to_tensor(img: "Any", source: str = "PIL image") -> Tensor:
    """PIL image of any mode -> RGB ``[3, H, W]`` (uint8, or float32 for 16/32-bit modes)."""
    w, h = img.size
    if w == 0 or h == 0:
        raise ImageInputError(f"{source}: empty image ({w}x{h})")
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img).astype(np.float32)
        if mode == "F":
            scale = 1.0 if float(np.nanmax(arr)) <= 1.0 else 255.0
        elif mode == "I" and float(arr.max()) <= 255.0:
            scale = 255.0
        else:
            scale = 65535.0
        t = torch.from_numpy(np.ascontiguousarray(arr / scale))
        return _finish_float(t.unsqueeze(0).expand(3, -1, -1).contiguous(), source)
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if mode != "RGB":
        img = img.convert("RGB")
    arr = np.array(img, dtype=np.uint8)  # a writable copy
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


# --------------------------------------------------------------------------------------------
# arrays and tensors
# --------------------------------------------------------------------------------------------


def _numpy_to_tensor(arr: np.ndarray, label: str) -> Tensor:
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        return torch.from_numpy(arr.astype(np.float32) / 65535.0)
    if arr.dtype.kind not in "uif":
        raise ImageInputError(f"{label}: unsupported array dtype {arr.dtype}")
    if arr.dtype.kind in "ui" and arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ImageInputError(f"{label}: integer array of dtype {arr.dtype} has values outside "
                                  "0..255; pass uint8, uint16 or floats in [0, 1]")
        arr = arr.astype(np.uint8)
    arr = np.ascontiguousarray(arr)
    return torch.from_numpy(arr if arr.flags.writeable else arr.copy())  # read-only arrays (np.asarray(PIL))


def _split_batch(t: Tensor, label: str, layout_hint: Optional[str]) -> List[ImageItem]:
    """Turn a 2-D/3-D/4-D tensor into per-image ``[3, H, W]`` items."""
    src = f"{label} ({describe(t)})"
    try:
        batch = _to_bchw(t, label, layout_hint)
    except ImageInputError as e:
        return [ImageItem(src, error=str(e))]
    items = []
    n = batch.shape[0]
    for i in range(n):
        name = f"{label}[{i}]" if (t.dim() == 4) else label
        try:
            items.append(ImageItem(name, _to_rgb(batch[i], name)))
        except ImageInputError as e:
            items.append(ImageItem(name, error=str(e)))
    return items


def _to_bchw(t: Tensor, label: str, layout_hint: Optional[str]) -> Tensor:
    if t.dtype == torch.bool:
        t = t.to(torch.uint8) * 255
    if t.is_complex():
        raise ImageInputError(f"{label}: complex tensors are not images")
    if t.dim() == 2:
        return t[None, None]
    if t.dim() == 3:
        return _chw_or_hwc(t, label, layout_hint)[None]
    if t.dim() == 4:
        if t.shape[0] == 0:
            return t.new_zeros((0, 3, 1, 1))
        c_first, c_last = t.shape[1] in (1, 3, 4), t.shape[-1] in (1, 3, 4)
        if c_last and (not c_first or (t.shape[1] == 1 and t.shape[-1] != 1)
                       or layout_hint == "hwc"):
            return t.permute(0, 3, 1, 2)
        if c_first:
            return t
        raise ImageInputError(f"{label}: cannot tell channels in shape {tuple(t.shape)}; expected "
                              "[B,3,H,W] or [B,H,W,3] (1 or 4 channels also accepted)")
    raise ImageInputError(f"{label}: expected a 2-D, 3-D or 4-D image tensor, got shape {tuple(t.shape)}")


def _chw_or_hwc(t: Tensor, label: str, layout_hint: Optional[str]) -> Tensor:
    c_first, c_last = t.shape[0] in (1, 3, 4), t.shape[-1] in (1, 3, 4)
    if c_last and (not c_first or layout_hint == "hwc" or (t.shape[0] == 1 and t.shape[-1] != 1)):
        return t.permute(2, 0, 1)
    if c_first:
        return t
    raise ImageInputError(f"{label}: cannot tell channels in shape {tuple(t.shape)}; expected "
                          "[3,H,W] or [H,W,3] (1 or 4 channels also accepted)")


def _to_rgb(x: Tensor, name: str) -> Tensor:
    """``[C, H, W]`` (C in 1, 3, 4) -> ``[3, H, W]`` uint8 or float32 in [0, 1]."""
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
        return x.contiguous()
    if not x.is_floating_point():
        if x.numel() and (int(x.min()) < 0 or int(x.max()) > 255):
            raise ImageInputError(f"{name}: integer tensor of dtype {x.dtype} has values outside "
                                  "0..255; pass uint8 or floats in [0, 1]")
        return x.to(torch.uint8).contiguous()
    return _finish_float(x.float(), name)


def _finish_float(x: Tensor, name: str) -> Tensor:
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ImageInputError(f"{name}: {bad} NaN or infinite value(s); cannot score")
    lo, hi = float(x.min()), float(x.max())
    if lo < -_RANGE_SLACK or hi > 1.0 + _RANGE_SLACK:
        hint = " (looks like 0..255: divide by 255)" if hi > 2.0 else ""
        raise ImageInputError(f"{name}: float values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]{hint}")
    return x.clamp(0.0, 1.0).contiguous()


# --------------------------------------------------------------------------------------------
# files on disk: expand paths, folders and globs
# --------------------------------------------------------------------------------------------


def expand_paths(patterns: Iterable[Union[str, os.PathLike]], recursive: bool = False
                 ) -> List[str]:
    """Files, folders (their images, sorted) and glob patterns -> a list of paths.

    A pattern that matches nothing is kept as-is so that it is reported as unreadable.
    """
    import glob

    out: List[str] = []
    for pat in patterns:
        p = Path(pat)
        if p.is_dir():
            it = p.rglob("*") if recursive else p.iterdir()
            out.extend(sorted(str(f) for f in it
                              if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS))
        elif p.exists():
            out.append(str(p))
        elif glob.has_magic(str(pat)):
            matches = sorted(glob.glob(str(pat), recursive=True))
            files = [m for m in matches if Path(m).is_file()]
            out.extend(files if files else [str(pat)])
        else:
            out.append(str(pat))
    return out
