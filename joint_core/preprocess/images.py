"""Any image input -> a list of RGB tensors, one per image, each with its own error slot.

Accepted: a path (``str`` / ``os.PathLike``), a ``PIL.Image``, a numpy array (``HxW``,
``HxWxC``, ``CxHxW`` or a batch ``BxHxWxC``), a torch tensor (``[B,3,H,W]``, ``[B,H,W,3]`` - the
ComfyUI layout -, ``[3,H,W]``, ``[H,W,3]``, ``[H,W]``; float in [0, 1] or uint8), or a list /
tuple of any of these. Grayscale is replicated to RGB; alpha is dropped; 16-bit images are
scaled by 65535; CMYK, palette and other PIL modes are converted to RGB. Files and PIL images
are turned upright by their EXIF orientation.

A bad item never raises here: it becomes an :class:`ImageItem` with ``error`` set and a
message that names the file or the input's position, so the other images can still be scored.

Input safety lives here, once, for every face (API, CLI, ComfyUI, diffusers, streaming workers):

- **Files are checked before they are opened.** Only regular files are read (a FIFO, device or
  socket is refused with a named error, never read), through a non-blocking open whose file
  type is checked on the open descriptor. OS errors (missing, symlink loop, name too long,
  permission denied) become per-file messages.
- **Work per image is bounded** (:class:`ImageLimits`): a file's or PIL image's declared size is
  checked against ``max_pixels`` before anything is decoded; an image more elongated than
  ``max_aspect`` : 1 is scored on its central ``max_aspect`` : 1 part (with a warning on the
  item); an image whose longer side is at least twice the model's ``max_side`` is shrunk by an
  integer box filter while it is read (large JPEG files are decoded at 1/2, 1/4 or 1/8 scale),
  so nothing downstream ever holds more than ``(2 * max_side)^2`` pixels of it.
- **Degenerate images are flagged** (:func:`degenerate_reason`): nearly uniform or nearly black
  frames, pure noise, and images too small to judge get ``ImageItem.warning``; the scorer copies
  it onto the result, where every selection ranks such images last.
- **Layout is never guessed silently**: a 3-D or 4-D array or tensor whose first (channel) and
  last dimension could both be channels is read by its container's convention (torch:
  channels first, numpy: channels last) with an :class:`AmbiguousLayoutWarning`; pass
  ``layout=`` to say which.

:func:`load_items` is a pure function of one input (no shared state), so the streaming scorer
can call it in DataLoader worker processes.

This module holds the entry points; each job has its own module beside it: :mod:`.items`
(items, limits and the size rules), :mod:`.paths` (path checks, folders and globs),
:mod:`.decoding` (files, bytes and PIL images), :mod:`.arrays` (arrays and tensors, layout) and
:mod:`.flags` (degenerate images). Their public names are importable from here too.
"""

from __future__ import annotations

import io
import os
from typing import Any, List, Optional, Union

import numpy as np
from PIL import Image
from torch import Tensor

from ..errors import ImageInputError
from .arrays import numpy_to_tensor, split_batch
from .decoding import decode_file, decode_image, load_path, pil_to_tensor, read_pil
from .flags import degenerate_reason, finish_item
from .items import (DEFAULT_LIMITS, IMAGE_EXTENSIONS, LAYOUTS, MAX_ASPECT, MAX_PIXELS, MIN_SIDE,
                    OTHER_IMAGE_EXTENSIONS, AmbiguousLayoutWarning, FlaggedImageWarning, ImageItem, ImageLimits,
                    UnreadablePath, check_layout, describe, first_line)
from .paths import expand_paths, open_regular, os_error_message

__all__ = [
    "IMAGE_EXTENSIONS", "LAYOUTS", "MAX_ASPECT", "MAX_PIXELS", "MIN_SIDE", "OTHER_IMAGE_EXTENSIONS",
    "AmbiguousLayoutWarning", "FlaggedImageWarning", "ImageInputError", "ImageItem", "ImageLimits", "UnreadablePath",
    "check_layout", "collect_images", "decode_image", "degenerate_reason", "describe", "expand_paths", "first_line",
    "load_image", "load_items", "load_one", "open_regular", "os_error_message", "pil_to_tensor",
]


def collect_images(images: Any, limits: Optional[ImageLimits] = None, layout: str = "auto"
                   ) -> List[ImageItem]:
    """Flatten ``images`` into one :class:`ImageItem` per image (batches are split).

    ``limits`` bound the work per image (default: :class:`ImageLimits` without ``max_side``);
    ``layout`` (``"auto"``, ``"channels_first"``, ``"channels_last"``) says how 3-D and 4-D
    arrays and tensors are read."""
    check_layout(layout)
    if isinstance(images, (list, tuple)):
        items: List[ImageItem] = []
        for i, obj in enumerate(images):
            items.extend(load_items(obj, label=f"input {i}", limits=limits, layout=layout))
        return items
    if _is_image_like(images):
        return load_items(images, label="input 0", limits=limits, layout=layout)
    raise TypeError(
        "images must be a path, a PIL image, a numpy array, a torch tensor or a list of them, "
        f"got {type(images).__name__}")


def _is_image_like(obj: Any) -> bool:
    return isinstance(obj, (str, os.PathLike, Image.Image, np.ndarray, Tensor))


def load_items(obj: Any, label: str = "input 0", limits: Optional[ImageLimits] = None,
               layout: str = "auto") -> List[ImageItem]:
    """One input (a path, PIL image, array or tensor; a batch gives several) -> its items.

    Never raises for a bad input: every failure is an item with ``error`` set. A pure function
    of its arguments, safe to call in DataLoader worker processes."""
    limits = limits or DEFAULT_LIMITS
    if isinstance(obj, (str, os.PathLike)):
        source = os.fspath(obj)
        source = source if isinstance(source, str) else os.fsdecode(source)
        try:
            t, note = load_path(obj, limits)
        except ImageInputError as e:
            return [ImageItem(source, error=str(e))]
        return [finish_item(source, t, note, limits)]
    if isinstance(obj, Image.Image):
        try:
            source = getattr(obj, "filename", "") or f"{label} (PIL {obj.mode} {obj.size[0]}x{obj.size[1]})"
        except Exception:  # noqa: BLE001 - a broken PIL object still gets a named error below
            source = f"{label} (PIL image)"
        try:
            t, note = read_pil(obj, source, limits, from_user=True)
        except ImageInputError as e:
            return [ImageItem(source, error=str(e))]
        return [finish_item(source, t, note, limits)]
    if isinstance(obj, np.ndarray):
        try:
            t = numpy_to_tensor(obj, label)
        except ImageInputError as e:
            return [ImageItem(f"{label} ({describe(obj)})", error=str(e))]
        return split_batch(t, label, layout, "channels_last", limits)
    if isinstance(obj, Tensor):
        return split_batch(obj, label, layout, "channels_first", limits)
    return [ImageItem(f"{label} ({describe(obj)})",
                      error=f"{label}: unsupported input type {type(obj).__name__}; expected a path, "
                            "PIL image, numpy array or torch tensor")]


def load_image(path: Union[str, os.PathLike], limits: Optional[ImageLimits] = None) -> Tensor:
    """Read an image file as an RGB ``[3, H, W]`` tensor (uint8, or float32 for 16-bit and
    float files); raises :class:`ImageInputError` naming the file. ``limits`` as for
    :func:`collect_images`."""
    return load_path(path, limits or DEFAULT_LIMITS)[0]


def load_one(obj: Union[str, os.PathLike, bytes, bytearray, memoryview], source: Optional[str] = None,
             limits: Optional[ImageLimits] = None) -> ImageItem:
    """One image file (a path) or one encoded image (bytes, named by ``source``) -> one
    :class:`ImageItem`; never raises. The per-item loader of the streaming data loader
    (:mod:`joint_core.stream`), which runs it in worker processes; the same checks, limits and
    degenerate-image flags as :func:`load_items`."""
    limits = limits or DEFAULT_LIMITS
    if isinstance(obj, (bytes, bytearray, memoryview)):
        name = source if source is not None else f"<{len(obj)} bytes>"
        try:
            t, note = decode_file(io.BytesIO(obj), name, limits)
        except ImageInputError as e:
            return ImageItem(name, error=str(e))
        return finish_item(name, t, note, limits)
    return load_items(obj, label=source or "input 0", limits=limits)[0]
