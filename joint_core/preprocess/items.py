"""What every image input becomes, and the bounds on the work spent on it: :class:`ImageItem`
(one image or its error), :class:`ImageLimits` and the size rules they imply (the aspect-ratio crop,
the integer shrink factors), :class:`UnreadablePath`, the warnings, and the short descriptions
of inputs that messages use. No decoding happens here (see :mod:`.images` for the overview)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional, Tuple, Union

import numpy as np
from torch import Tensor

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
# image formats that folder mode finds but does not read: reported by name, never silently dropped
OTHER_IMAGE_EXTENSIONS = (".svg", ".svgz", ".ico", ".icns", ".heic", ".heif", ".avif", ".jxl", ".jp2",
                          ".psd", ".tga", ".ppm", ".pgm", ".pbm", ".pnm", ".exr", ".hdr", ".dng", ".raw",
                          ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2")
# The declared-size budget of files and PIL images, checked before decoding: Pillow's own
# decompression-bomb limit (89.5 megapixels, e.g. 9459 x 9459).
MAX_PIXELS = 89_478_485
# Images more elongated than this are scored on their central MAX_ASPECT:1 part.
MAX_ASPECT = 16
# Degenerate-image thresholds (see degenerate_reason); chosen with wide margins on real photos.
MIN_SIDE = 32                 # smaller images are too small to judge
LAYOUTS = ("auto", "channels_first", "channels_last")


class AmbiguousLayoutWarning(UserWarning):
    """An array or tensor whose shape allows both channels-first and channels-last readings."""


class FlaggedImageWarning(UserWarning):
    """Scoring flagged some images (``ScoreResult.warnings``): their scores rank last."""


@dataclass(frozen=True)
class ImageLimits:
    """Bounds on the work spent on one image.

    Args:
        max_side: the model's working resolution (``PreprocessConfig.max_side``). Images whose
            longer side is at least ``2 * max_side`` are shrunk by an integer factor while being
            read, keeping the longer side >= ``max_side`` (the model then resizes to
            ``max_side``). None: no shrinking (the image keeps its full resolution).
        max_pixels: files and PIL images whose declared size (width x height) exceeds it are
            refused before decoding.
        max_aspect: images more elongated than ``max_aspect`` : 1 are centre-cropped on their
            longer side to ``max_aspect`` : 1, with a warning on the item.
        flag_degenerate: run :func:`degenerate_reason` on every image.
    """

    max_side: Optional[int] = None
    max_pixels: int = MAX_PIXELS
    max_aspect: float = MAX_ASPECT
    flag_degenerate: bool = True


DEFAULT_LIMITS = ImageLimits()


@dataclass
class ImageItem:
    """One image: ``tensor`` is ``[3, H, W]`` (uint8, or float32 in [0, 1]) or ``None`` when
    ``error`` says why the input could not be read. ``warning`` (or None) says why its score
    should not be trusted as is (a degenerate image, a cropped panorama); it names the input."""

    source: str
    tensor: Optional[Tensor] = None
    error: Optional[str] = None
    warning: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None


class UnreadablePath(str):
    """A path that :func:`expand_paths` found but knows cannot be scored (an empty folder, a
    pattern that matched nothing, a format that is not read); ``reason`` says why and names it.
    It is a ``str``, so it goes wherever paths go; loading it gives that error."""

    reason: str

    def __new__(cls, path: Union[str, os.PathLike], reason: str) -> "UnreadablePath":
        obj = super().__new__(cls, os.fspath(path))
        obj.reason = reason
        return obj

    def __reduce__(self):  # pickles into DataLoader workers
        return (UnreadablePath, (str(self), self.reason))


def describe(obj: Any) -> str:
    """A short description of an input for messages."""
    if isinstance(obj, (str, os.PathLike)):
        return str(obj)
    if isinstance(obj, Tensor):
        try:
            return f"tensor{tuple(obj.shape)}"
        except Exception:  # noqa: BLE001 - nested tensors have no single shape
            return "tensor"
    if isinstance(obj, np.ndarray):
        return f"array{obj.shape}"
    return type(obj).__name__


def check_layout(layout: Any) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    return layout


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (at most 300 characters), for one-line errors."""
    s = str(e).strip()
    return (s.splitlines()[0] if s else type(e).__name__)[:300]


def aspect_box(w: int, h: int, limits: ImageLimits) -> Tuple[int, int, int, int]:
    """``(left, top, width, height)`` of the central part kept by the aspect-ratio rule."""
    short, long = min(w, h), max(w, h)
    keep = int(short * limits.max_aspect)
    if short == 0 or long <= keep:
        return 0, 0, w, h
    if w > h:
        return (w - keep) // 2, 0, keep, h
    return 0, (h - keep) // 2, w, keep


def aspect_note(w: int, h: int, box: Tuple[int, int, int, int], limits: ImageLimits) -> Optional[str]:
    if (box[2], box[3]) == (w, h):
        return None
    return (f"{w}x{h} is more elongated than {limits.max_aspect:g}:1; only its central "
            f"{box[2]}x{box[3]} part was scored")


def reduce_factors(w: int, h: int, limits: ImageLimits) -> Tuple[int, int]:
    """Integer shrink factors ``(fx, fy)``: >1 only when the longer side is at least twice
    ``max_side``; the result keeps its longer side >= ``max_side`` and every side >= 1."""
    if limits.max_side is None:
        return 1, 1
    f = max(w, h) // limits.max_side
    if f < 2:
        return 1, 1
    return max(1, min(f, w)), max(1, min(f, h))
