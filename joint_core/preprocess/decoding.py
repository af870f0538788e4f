"""Encoded images and PIL images -> RGB ``[3, H, W]`` tensors: the declared size checked before
decoding, large JPEGs drafted, EXIF orientation applied, every Pillow mode (16-bit, float,
palette, CMYK ...) converted, the size rules of :class:`~.items.ImageLimits` applied."""

from __future__ import annotations

import math
import os
import threading
import warnings
from typing import Any, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from ..errors import ImageInputError
from .arrays import RANGE_SLACK, finish_float
from .items import DEFAULT_LIMITS, ImageLimits, UnreadablePath, aspect_box, aspect_note, first_line, reduce_factors
from .paths import open_regular

_OPEN_LOCK = threading.Lock()


def load_path(path: Union[str, os.PathLike], limits: ImageLimits) -> Tuple[Tensor, Optional[str]]:
    if isinstance(path, UnreadablePath):
        raise ImageInputError(path.reason)
    name = os.fspath(path)
    name = name if isinstance(name, str) else os.fsdecode(name)
    with open_regular(name) as f:
        return decode_file(f, name, limits)


def decode_image(fp: Any, source: str, limits: Optional[ImageLimits] = None) -> Tensor:
    """Decode an encoded image from a binary file object - ``io.BytesIO`` over the bytes of a
    tar member or a Parquet cell - as an RGB ``[3, H, W]`` tensor, with the same limits and
    orientation as files. Every failure is an :class:`ImageInputError` naming ``source``."""
    return decode_file(fp, source, limits or DEFAULT_LIMITS)[0]


def decode_file(f: Any, name: str, limits: ImageLimits) -> Tuple[Tensor, Optional[str]]:
    """An open binary file -> (tensor, note): declared size checked before decoding, large JPEGs
    drafted, EXIF orientation applied, the aspect and size rules of :class:`ImageLimits`."""
    try:
        # our own budget is checked below, before decoding; Pillow's warning (raised by open(),
        # which reads only the header) is not an error. warnings.catch_warnings swaps one
        # process-wide filter list, so decoding threads (preprocess.loader) take turns here:
        # without the lock two overlapping opens could leave the "ignore" filter installed for good
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(f)
        with img:
            _check_declared_size(img, name, limits)
            _draft(img, limits)
            ImageOps.exif_transpose(img, in_place=True)
            return read_pil(img, name, limits, from_user=False)
    except ImageInputError:
        raise
    except Image.DecompressionBombError as e:   # Pillow's own check in open(), at twice its limit
        raise ImageInputError(f"{name}: declared size is over the limit of {limits.max_pixels / 1e6:.1f} "
                              f"megapixels (refused before decoding: {e})") from None
    except UnidentifiedImageError:
        raise ImageInputError(f"{name}: not an image file, or a format Pillow cannot read") from None
    except Exception as e:  # any decoder failure (struct.error, IndexError, ...) is this file's fault
        raise ImageInputError(f"{name}: cannot decode image ({type(e).__name__}: {first_line(e)})") from None


def _check_declared_size(img: Any, source: str, limits: ImageLimits) -> None:
    w, h = img.size
    if w * h > limits.max_pixels:
        raise ImageInputError(f"{source}: {w}x{h} is {w * h / 1e6:.1f} megapixels, over the limit of "
                              f"{limits.max_pixels / 1e6:.1f} (refused before decoding)")


def _draft(img: Any, limits: ImageLimits) -> None:
    """Large JPEGs: let the decoder scale by 1/2, 1/4 or 1/8 (Pillow's ``draft``), never below
    what the integer reduction of :func:`reduce_factors` would keep."""
    if limits.max_side is None or getattr(img, "format", None) != "JPEG" or img.mode not in ("RGB", "L"):
        return
    w, h = aspect_box(img.size[0], img.size[1], limits)[2:]
    fx, fy = reduce_factors(w, h, limits)
    if fx > 1 or fy > 1:
        img.draft(img.mode, (math.ceil(img.size[0] / fx), math.ceil(img.size[1] / fy)))


def pil_to_tensor(img: "Any", source: str = "PIL image", limits: Optional[ImageLimits] = None) -> Tensor:
    """PIL image of any mode -> RGB ``[3, H, W]`` (uint8, or float32 for 16/32-bit modes),
    upright by its EXIF orientation; raises :class:`ImageInputError` naming ``source``."""
    return read_pil(img, source, limits or DEFAULT_LIMITS, from_user=True)[0]


def read_pil(img: Any, source: str, limits: ImageLimits, from_user: bool) -> Tuple[Tensor, Optional[str]]:
    try:
        return _pil_image_unchecked(img, source, limits, from_user)
    except ImageInputError:
        raise
    except Exception as e:  # noqa: BLE001 - a lazily opened truncated file, a closed image, ...
        raise ImageInputError(f"{source}: cannot read image ({type(e).__name__}: {first_line(e)})") from None


def _pil_image_unchecked(img: Any, source: str, limits: ImageLimits, from_user: bool
                         ) -> Tuple[Tensor, Optional[str]]:
    w, h = img.size
    if w == 0 or h == 0:
        raise ImageInputError(f"{source}: empty image ({w}x{h})")
    if from_user:
        _check_declared_size(img, source, limits)
        # a closed image fails here, a lazily opened one is decoded here (errors name the source)
        img.load()
        if img.getexif().get(0x0112, 1) not in (0, 1):   # EXIF orientation, as for paths
            img = ImageOps.exif_transpose(img)             # a rotated copy; the caller's image is untouched
            w, h = img.size
    box = aspect_box(w, h, limits)
    note = aspect_note(w, h, box, limits)
    if note:
        img = img.crop((box[0], box[1], box[0] + box[2], box[1] + box[3]))
        w, h = img.size
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _pil_high_depth(img, source, limits), note
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    fx, fy = reduce_factors(w, h, limits)
    if fx > 1 or fy > 1:
        if img.mode == "1":
            img = img.convert("L")
        try:
            img = img.reduce((fx, fy))
        except ValueError:  # a mode Pillow cannot reduce
            img = img.convert("RGB").reduce((fx, fy))
    if img.mode != "RGB":
        img = img.convert("RGB")
    # HWC -> CHW in NumPy, not torch: a torch copy this size runs a thread team, and decoding
    # threads (preprocess.loader) must not start one beside the model's
    arr = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()   # C order, writable
    return torch.from_numpy(arr), note


def _pil_high_depth(img: Any, source: str, limits: ImageLimits) -> Tensor:
    """16-bit, 32-bit integer and float images -> float32 RGB in [0, 1]. The scale comes from
    the mode and the full image's value range (read before any shrinking)."""
    mode = img.mode
    if mode.startswith("I;16"):
        img = img.convert("I")
        scale = 65535.0
    else:
        lo, hi = img.getextrema()
        if mode == "F":
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ImageInputError(f"{source}: float image holds NaN or infinite values; cannot score")
            if lo < -RANGE_SLACK or hi > 255.0 * (1 + RANGE_SLACK):
                raise ImageInputError(f"{source}: 32-bit float image with values in [{lo:.4g}, {hi:.4g}]; "
                                      "expected [0, 1] or [0, 255]")
            scale = 1.0 if hi <= 1.0 + RANGE_SLACK else 255.0
        else:
            if lo < 0 or hi > 65535:
                raise ImageInputError(f"{source}: 32-bit integer image with values in [{lo}, {hi}]; "
                                      "expected 0..255 or 0..65535")
            scale = 255.0 if hi <= 255 else 65535.0
    fx, fy = reduce_factors(img.size[0], img.size[1], limits)
    if fx > 1 or fy > 1:
        img = img.reduce((fx, fy))
    arr = np.asarray(img).astype(np.float32)
    t = torch.from_numpy(np.ascontiguousarray(arr / scale))
    return finish_float(t.unsqueeze(0).expand(3, -1, -1).contiguous(), source)
