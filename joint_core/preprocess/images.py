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
"""

from __future__ import annotations

import errno
import io
import math
import os
import stat
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from ..errors import ImageInputError

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
_UNIFORM_FRACTION = 0.97      # this share of pixels within _UNIFORM_TOL of the median colour
_UNIFORM_TOL = 3.0 / 255.0
_DARK_LEVEL = 8.5 / 255.0     # "nearly black": 99% of pixels at most 8/255 bright
_NOISE_CORRELATION = 0.15     # neighbouring pixels of real images correlate far more (>= 0.3)
_ANALYSIS_SIDE = 256          # statistics on at most 256 x 256 samples

LAYOUTS = ("auto", "channels_first", "channels_last")

# values a little outside [0, 1] (a VAE decode, a resampling overshoot) are clamped;
# anything further out is an error, usually a 0..255 float image
_RANGE_SLACK = 1e-2


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


_DEFAULT_LIMITS = ImageLimits()


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


def check_layout(layout: Any) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    return layout


def _is_image_like(obj: Any) -> bool:
    from PIL import Image

    return isinstance(obj, (str, os.PathLike, Image.Image, np.ndarray, Tensor))


def load_items(obj: Any, label: str = "input 0", limits: Optional[ImageLimits] = None,
               layout: str = "auto") -> List[ImageItem]:
    """One input (a path, PIL image, array or tensor; a batch gives several) -> its items.

    Never raises for a bad input: every failure is an item with ``error`` set. A pure function
    of its arguments, safe to call in DataLoader worker processes."""
    from PIL import Image

    limits = limits or _DEFAULT_LIMITS
    if isinstance(obj, (str, os.PathLike)):
        source = os.fspath(obj)
        source = source if isinstance(source, str) else os.fsdecode(source)
        try:
            t, note = _load_path(obj, limits)
        except ImageInputError as e:
            return [ImageItem(source, error=str(e))]
        return [_finish_item(source, t, note, limits)]
    if isinstance(obj, Image.Image):
        try:
            source = getattr(obj, "filename", "") or f"{label} (PIL {obj.mode} {obj.size[0]}x{obj.size[1]})"
        except Exception:  # noqa: BLE001 - a broken PIL object still gets a named error below
            source = f"{label} (PIL image)"
        try:
            t, note = _pil_image(obj, source, limits, from_user=True)
        except ImageInputError as e:
            return [ImageItem(source, error=str(e))]
        return [_finish_item(source, t, note, limits)]
    if isinstance(obj, np.ndarray):
        try:
            t = _numpy_to_tensor(obj, label)
        except ImageInputError as e:
            return [ImageItem(f"{label} ({describe(obj)})", error=str(e))]
        return _split_batch(t, label, layout, "channels_last", limits)
    if isinstance(obj, Tensor):
        return _split_batch(obj, label, layout, "channels_first", limits)
    return [ImageItem(f"{label} ({describe(obj)})",
                      error=f"{label}: unsupported input type {type(obj).__name__}; expected a path, "
                            "PIL image, numpy array or torch tensor")]


def _finish_item(source: str, t: Tensor, note: Optional[str], limits: ImageLimits) -> ImageItem:
    """The item of a decoded image: its notes and, when asked, its degenerate-image flag."""
    notes = [note] if note else []
    if limits.flag_degenerate:
        reason = degenerate_reason(t)
        if reason:
            notes.append(reason)
    return ImageItem(source, t, warning=f"{source}: " + "; ".join(notes) if notes else None)


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def load_image(path: Union[str, os.PathLike], limits: Optional[ImageLimits] = None) -> Tensor:
    """Read an image file as an RGB ``[3, H, W]`` tensor (uint8, or float32 for 16-bit and
    float files); raises :class:`ImageInputError` naming the file. ``limits`` as for
    :func:`collect_images`."""
    return _load_path(path, limits or _DEFAULT_LIMITS)[0]


_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def _file_kind(mode: int) -> str:
    for test, name in _FILE_KINDS:
        if test(mode):
            return name
    return "not a regular file"


def os_error_message(path: str, e: OSError) -> str:
    """One line for an OS error on ``path`` (a missing file, a symlink loop, a name too long ...)."""
    code = e.errno
    if code == errno.ENOENT:
        if os.path.islink(path):
            return f"{path}: broken symbolic link (points to {os.readlink(path)!r}, which does not exist)"
        return f"{path}: no such file"
    if code == errno.ELOOP:
        return f"{path}: symbolic link loop (the links lead back to themselves)"
    if code == errno.ENAMETOOLONG:
        return f"{path}: file name too long for the file system"
    if code in (errno.EACCES, errno.EPERM):
        return f"{path}: is a folder, not an image" if os.path.isdir(path) else f"{path}: permission denied"
    if code == errno.ENOTDIR:
        return f"{path}: a part of the path is a file, not a folder"
    if code == errno.EISDIR:
        return f"{path}: is a folder, not an image"
    return f"{path}: cannot open ({e.strerror or type(e).__name__})"


def open_regular(path: str, what: str = "an image file", error: type = ImageInputError):
    """Open ``path`` for binary reading without ever blocking on it, or raise ``error`` with one
    line naming it. The open is non-blocking (a FIFO with no writer would block a plain open
    forever) and the file type is checked on the open descriptor (no race with a swap after a
    separate stat): only regular files are opened. ``what`` names the expected file in messages."""
    if path == "":
        raise error("'': empty path (name a file or folder; '.' is the current folder)")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise error(os_error_message(path, e)) from None
    except (ValueError, TypeError) as e:  # embedded NUL bytes and the like
        raise error(f"{path!r}: not a usable path ({e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = _file_kind(st.st_mode)
            hint = "" if kind == "a folder" else "; only regular files are read"
            raise error(f"{path}: is {kind}, not {what}{hint}"
                        if kind != "not a regular file" else f"{path}: not a regular file{hint}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _load_path(path: Union[str, os.PathLike], limits: ImageLimits) -> Tuple[Tensor, Optional[str]]:
    if isinstance(path, UnreadablePath):
        raise ImageInputError(path.reason)
    name = os.fspath(path)
    name = name if isinstance(name, str) else os.fsdecode(name)
    with open_regular(name) as f:
        return _decode(f, name, limits)


def decode_image(fp: Any, source: str, limits: Optional[ImageLimits] = None) -> Tensor:
    """Decode an encoded image from a binary file object - ``io.BytesIO`` over the bytes of a
    tar member or a Parquet cell - as an RGB ``[3, H, W]`` tensor, with the same limits and
    orientation as files. Every failure is an :class:`ImageInputError` naming ``source``."""
    return _decode(fp, source, limits or _DEFAULT_LIMITS)[0]


def _decode(f: Any, name: str, limits: ImageLimits) -> Tuple[Tensor, Optional[str]]:
    """An open binary file -> (tensor, note): declared size checked before decoding, large JPEGs
    drafted, EXIF orientation applied, the aspect and size rules of :class:`ImageLimits`."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # our own budget is checked below, before decoding; Pillow's warning is not an error
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(f) as img:
                _check_declared_size(img, name, limits)
                _draft(img, limits)
                ImageOps.exif_transpose(img, in_place=True)
                return _pil_image(img, name, limits, from_user=False)
    except ImageInputError:
        raise
    except Image.DecompressionBombError as e:   # Pillow's own check in open(), at twice its limit
        raise ImageInputError(f"{name}: declared size is over the limit of {limits.max_pixels / 1e6:.1f} "
                              f"megapixels (refused before decoding: {e})") from None
    except UnidentifiedImageError:
        raise ImageInputError(f"{name}: not an image file, or a format Pillow cannot read") from None
    except Exception as e:  # any decoder failure (struct.error, IndexError, ...) is this file's fault
        raise ImageInputError(f"{name}: cannot decode image ({type(e).__name__}: {first_line(e)})") from None


def load_one(obj: Union[str, os.PathLike, bytes, bytearray, memoryview], source: Optional[str] = None,
             limits: Optional[ImageLimits] = None) -> ImageItem:
    """One image file (a path) or one encoded image (bytes, named by ``source``) -> one
    :class:`ImageItem`; never raises. The per-item loader of the streaming data loader
    (:mod:`joint_core.stream`), which runs it in worker processes; the same checks, limits and
    degenerate-image flags as :func:`load_items`."""
    limits = limits or _DEFAULT_LIMITS
    if isinstance(obj, (bytes, bytearray, memoryview)):
        name = source if source is not None else f"<{len(obj)} bytes>"
        try:
            t, note = _decode(io.BytesIO(obj), name, limits)
        except ImageInputError as e:
            return ImageItem(name, error=str(e))
        return _finish_item(name, t, note, limits)
    return load_items(obj, label=source or "input 0", limits=limits)[0]


def _check_declared_size(img: Any, source: str, limits: ImageLimits) -> None:
    w, h = img.size
    if w * h > limits.max_pixels:
        raise ImageInputError(f"{source}: {w}x{h} is {w * h / 1e6:.1f} megapixels, over the limit of "
                              f"{limits.max_pixels / 1e6:.1f} (refused before decoding)")


def _draft(img: Any, limits: ImageLimits) -> None:
    """Large JPEGs: let the decoder scale by 1/2, 1/4 or 1/8 (Pillow's ``draft``), never below
    what the integer reduction of :func:`_reduce_factors` would keep."""
    if limits.max_side is None or getattr(img, "format", None) != "JPEG" or img.mode not in ("RGB", "L"):
        return
    w, h = _aspect_box(img.size[0], img.size[1], limits)[2:]
    fx, fy = _reduce_factors(w, h, limits)
    if fx > 1 or fy > 1:
        img.draft(img.mode, (math.ceil(img.size[0] / fx), math.ceil(img.size[1] / fy)))


# --------------------------------------------------------------------------------------------
# the size rules, shared by PIL images and tensors
# --------------------------------------------------------------------------------------------


def _aspect_box(w: int, h: int, limits: ImageLimits) -> Tuple[int, int, int, int]:
    """``(left, top, width, height)`` of the central part kept by the aspect-ratio rule."""
    short, long = min(w, h), max(w, h)
    keep = int(short * limits.max_aspect)
    if short == 0 or long <= keep:
        return 0, 0, w, h
    if w > h:
        return (w - keep) // 2, 0, keep, h
    return 0, (h - keep) // 2, w, keep


def _aspect_note(w: int, h: int, box: Tuple[int, int, int, int], limits: ImageLimits) -> Optional[str]:
    if (box[2], box[3]) == (w, h):
        return None
    return (f"{w}x{h} is more elongated than {limits.max_aspect:g}:1; only its central "
            f"{box[2]}x{box[3]} part was scored")


def _reduce_factors(w: int, h: int, limits: ImageLimits) -> Tuple[int, int]:
    """Integer shrink factors ``(fx, fy)``: >1 only when the longer side is at least twice
    ``max_side``; the result keeps its longer side >= ``max_side`` and every side >= 1."""
    if limits.max_side is None:
        return 1, 1
    f = max(w, h) // limits.max_side
    if f < 2:
        return 1, 1
    return max(1, min(f, w)), max(1, min(f, h))


# --------------------------------------------------------------------------------------------
# PIL images
# --------------------------------------------------------------------------------------------


def pil_to_tensor(img: "Any", source: str = "PIL image", limits: Optional[ImageLimits] = None) -> Tensor:
    """PIL image of any mode -> RGB ``[3, H, W]`` (uint8, or float32 for 16/32-bit modes),
    upright by its EXIF orientation; raises :class:`ImageInputError` naming ``source``."""
    return _pil_image(img, source, limits or _DEFAULT_LIMITS, from_user=True)[0]


def _pil_image(img: Any, source: str, limits: ImageLimits, from_user: bool) -> Tuple[Tensor, Optional[str]]:
    try:
        return _pil_image_unchecked(img, source, limits, from_user)
    except ImageInputError:
        raise
    except Exception as e:  # noqa: BLE001 - a lazily opened truncated file, a closed image, ...
        raise ImageInputError(f"{source}: cannot read image ({type(e).__name__}: {first_line(e)})") from None


def _pil_image_unchecked(img: Any, source: str, limits: ImageLimits, from_user: bool
                         ) -> Tuple[Tensor, Optional[str]]:
    from PIL import ImageOps

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
    box = _aspect_box(w, h, limits)
    note = _aspect_note(w, h, box, limits)
    if note:
        img = img.crop((box[0], box[1], box[0] + box[2], box[1] + box[3]))
        w, h = img.size
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _pil_high_depth(img, source, limits), note
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    fx, fy = _reduce_factors(w, h, limits)
    if fx > 1 or fy > 1:
        if img.mode == "1":
            img = img.convert("L")
        try:
            img = img.reduce((fx, fy))
        except ValueError:  # a mode Pillow cannot reduce
            img = img.convert("RGB").reduce((fx, fy))
    if img.mode != "RGB":
        img = img.convert("RGB")
    arr = np.array(img, dtype=np.uint8)  # a writable copy
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous(), note


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
            if lo < -_RANGE_SLACK or hi > 255.0 * (1 + _RANGE_SLACK):
                raise ImageInputError(f"{source}: 32-bit float image with values in [{lo:.4g}, {hi:.4g}]; "
                                      "expected [0, 1] or [0, 255]")
            scale = 1.0 if hi <= 1.0 + _RANGE_SLACK else 255.0
        else:
            if lo < 0 or hi > 65535:
                raise ImageInputError(f"{source}: 32-bit integer image with values in [{lo}, {hi}]; "
                                      "expected 0..255 or 0..65535")
            scale = 255.0 if hi <= 255 else 65535.0
    fx, fy = _reduce_factors(img.size[0], img.size[1], limits)
    if fx > 1 or fy > 1:
        img = img.reduce((fx, fy))
    arr = np.asarray(img).astype(np.float32)
    t = torch.from_numpy(np.ascontiguousarray(arr / scale))
    return _finish_float(t.unsqueeze(0).expand(3, -1, -1).contiguous(), source)


# --------------------------------------------------------------------------------------------
# arrays and tensors
# --------------------------------------------------------------------------------------------


def _numpy_to_tensor(arr: np.ndarray, label: str) -> Tensor:
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


def _split_batch(t: Tensor, label: str, layout: str, convention: str, limits: ImageLimits
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
            items.append(_finish_item(name, x, note, limits))
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
    _check_float_range(x, name, hint=True)
    return x


def _bound_tensor(x: Tensor, limits: ImageLimits) -> Tuple[Tensor, Optional[str]]:
    """The aspect-ratio and size rules for an in-memory ``[3, H, W]`` image (the same rules as
    for files): centre-crop beyond ``max_aspect``, shrink by integer factors beyond
    ``2 * max_side``. 8-bit images shrink as Pillow's ``reduce`` does (so a file and its pixels
    as an array give the same tensor), float images by the mean of each box."""
    h, w = x.shape[-2:]
    box = _aspect_box(w, h, limits)
    note = _aspect_note(w, h, box, limits)
    x = x[:, box[1]:box[1] + box[3], box[0]:box[0] + box[2]]
    fx, fy = _reduce_factors(box[2], box[3], limits)
    if fx > 1 or fy > 1:
        if x.dtype == torch.uint8:
            from PIL import Image

            arr = x.permute(1, 2, 0).cpu().contiguous().numpy()
            arr = np.array(Image.fromarray(arr, "RGB").reduce((fx, fy)), dtype=np.uint8)
            x = torch.from_numpy(arr).permute(2, 0, 1).to(x.device)
        else:
            x = F.avg_pool2d(x[None].float(), (fy, fx), (fy, fx), ceil_mode=True)[0]
    if x.dtype == torch.uint8:
        return x.contiguous(), note
    return x.float().clamp(0.0, 1.0).contiguous(), note


def _check_float_range(x: Tensor, name: str, hint: bool) -> None:
    """NaN / infinite values and values outside [0, 1] (beyond a small slack) are errors. One
    reduction pass (no full-size temporaries) unless something is wrong."""
    if x.numel() == 0:
        return
    lo, hi = (float(v) for v in torch.aminmax(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        bad = int((~torch.isfinite(x)).sum())
        raise ImageInputError(f"{name}: {bad} NaN or infinite value(s); cannot score")
    if lo < -_RANGE_SLACK or hi > 1.0 + _RANGE_SLACK:
        extra = " (looks like 0..255: divide by 255)" if hint and hi > 2.0 else ""
        raise ImageInputError(f"{name}: float values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]{extra}")


def _finish_float(x: Tensor, name: str) -> Tensor:
    _check_float_range(x, name, hint=False)
    return x.clamp(0.0, 1.0).contiguous()


# --------------------------------------------------------------------------------------------
# degenerate images
# --------------------------------------------------------------------------------------------


def degenerate_reason(x: Tensor) -> Optional[str]:
    """Why an RGB ``[3, H, W]`` image (uint8, or float in [0, 1]) is degenerate, or None.

    - **too small**: a side shorter than :data:`MIN_SIDE` pixels;
    - **nearly uniform**: at least 97% of the pixels within 3/255 of the median colour (flat
      frames, a black safety-checker frame, a blank canvas with a speck);
    - **nearly black**: 99% of the pixels at most 8/255 bright in every channel;
    - **pure noise**: neighbouring pixels uncorrelated (correlation < 0.15 both across and down,
      on the central 256 x 256 pixels at full resolution); real photographs, even textures like
      grass or gravel, correlate far more.

    Cheap (statistics on at most 256 x 256 samples), vectorised and deterministic; runs where the
    image lives (CPU or GPU)."""
    h, w = x.shape[-2:]
    if min(h, w) < MIN_SIDE:
        return (f"flagged: {w}x{h} is too small to judge (under {MIN_SIDE} px on a side); "
                "its score is not meaningful and it ranks last")
    scale = 255.0 if x.dtype == torch.uint8 else 1.0
    sy, sx = -(-h // _ANALYSIS_SIDE), -(-w // _ANALYSIS_SIDE)
    s = x[:, ::sy, ::sx].reshape(3, -1).float() / scale           # a strided view of the whole image
    med = s.median(dim=1).values
    near = ((s - med[:, None]).abs().amax(0) <= _UNIFORM_TOL).float().mean()
    dark = torch.quantile(s.amax(0), 0.99)
    ch, cw = min(h, _ANALYSIS_SIDE), min(w, _ANALYSIS_SIDE)
    top, left = (h - ch) // 2, (w - cw) // 2
    lum = x[:, top:top + ch, left:left + cw].float() / scale
    lum = (lum * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(3, 1, 1)).sum(0)
    corr = torch.stack([_correlation(lum[:, :-1], lum[:, 1:]), _correlation(lum[:-1], lum[1:])])
    near, dark, corr_max = float(near), float(dark), float(corr.amax())
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


def _correlation(a: Tensor, b: Tensor) -> Tensor:
    a = a - a.mean()
    b = b - b.mean()
    den = (a.pow(2).sum() * b.pow(2).sum()).sqrt()
    return torch.where(den > 0, (a * b).sum() / den.clamp_min(1e-12), torch.ones((), device=a.device))


# --------------------------------------------------------------------------------------------
# files on disk: expand paths, folders and globs
# --------------------------------------------------------------------------------------------


def expand_paths(patterns: Iterable[Union[str, os.PathLike]], recursive: bool = False) -> List[str]:
    """Files, folders (their images, sorted) and glob patterns -> a list of paths.

    Nothing is dropped silently. A file named explicitly is kept whatever it is (loading it says
    what is wrong: missing, a FIFO, a symlink loop, a name too long ...). In folders, files with an
    image extension (:data:`IMAGE_EXTENSIONS`) are kept, including broken links and non-regular
    files of that name, which then fail by name; other image formats (:data:`OTHER_IMAGE_EXTENSIONS`,
    e.g. ``.svg``, ``.ico``) come back as :class:`UnreadablePath` saying they are not read; other
    files are ignored. A folder that yields nothing, a pattern that matches nothing, an empty
    path and a folder that cannot be listed also come back as :class:`UnreadablePath`, so that
    scoring reports them like any unreadable file.
    """
    import glob

    out: List[str] = []
    for pat in patterns:
        s = os.fspath(pat)
        s = s if isinstance(s, str) else os.fsdecode(s)
        if s == "":
            out.append(UnreadablePath("", "'': empty path (name a file or folder; '.' is the current folder)"))
            continue
        try:
            is_dir = stat.S_ISDIR(os.stat(s).st_mode)
            exists = True
        except (OSError, ValueError):
            is_dir, exists = False, os.path.lexists(s) if "\0" not in s else False
        if is_dir:
            out.extend(_scan_folder(s, recursive))
        elif exists or not glob.has_magic(s):
            out.append(s)
        else:
            try:
                matches = sorted(m for m in glob.glob(s, recursive=True) if not os.path.isdir(m))
            except OSError as e:
                matches = []
                out.append(UnreadablePath(s, os_error_message(s, e)))
                continue
            out.extend(matches if matches else [UnreadablePath(s, f"{s}: no file matches this pattern")])
    return out


def _scan_folder(root: str, recursive: bool) -> List[str]:
    """The images of a folder (sorted), problems included as described in :func:`expand_paths`."""
    found: List[str] = []
    ignored = 0
    todo = [root]
    while todo:
        folder = todo.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as e:
            found.append(UnreadablePath(folder, os_error_message(folder, e).replace(
                ": permission denied", ": cannot list this folder (permission denied)")))
            continue
        for entry in entries:
            suffix = os.path.splitext(entry.name)[1].lower()
            try:
                real_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                real_dir = False
            if real_dir:
                if recursive:
                    todo.append(entry.path)
                continue
            if suffix in IMAGE_EXTENSIONS:
                try:
                    if entry.is_dir():   # a link to a folder, named like an image: not an image
                        ignored += 1
                        continue
                except OSError:
                    pass                 # a broken link or a loop: kept, loading names the problem
                found.append(entry.path)
            elif suffix in OTHER_IMAGE_EXTENSIONS:
                found.append(UnreadablePath(entry.path, (
                    f"{entry.path}: {suffix} files are not read from folders (joint reads "
                    f"{' '.join(IMAGE_EXTENSIONS)})")))
            else:
                ignored += 1
    if not found:
        what = f"; {ignored} other file(s) ignored" if ignored else ""
        return [UnreadablePath(root, f"{root}: folder holds no images (looked for "
                                     f"{' '.join(IMAGE_EXTENSIONS)}{', recursively' if recursive else ''}{what})")]
    return sorted(found)


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (at most 300 characters), for one-line errors."""
    s = str(e).strip()
    return (s.splitlines()[0] if s else type(e).__name__)[:300]
