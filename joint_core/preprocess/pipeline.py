"""The one place where RGB images become the two branches' input tensors.

:class:`Preprocessor` runs on the model's device, on whole batches: images of equal size are
stacked and transformed together, images of other sizes in their own groups, and every
operation is per-image, so an image gets the same tensors alone or in any batch.

Scoring is deterministic (centre crops, centred fragments, the partition drawn from the
configured seed). Training passes ``train=True`` and a ``torch.Generator`` for random crops,
fragment offsets and partitions.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import PreprocessConfig
from .localizer import ArtifactLocalizer, NoLocalizer
from .lowfreq import low_frequency_map
from .partition import cells_with_artifacts, partition_priorities, patch_partition

Images = Union[Tensor, Sequence[Tensor]]


# --------------------------------------------------------------------------------------------
# primitives (batched, per-image)
# --------------------------------------------------------------------------------------------


def resize(x: Tensor, size: Tuple[int, int], mode: str = "bilinear") -> Tensor:
    """Antialiased resize of ``[B, C, H, W]`` to ``size`` (matches PIL's filters closely)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    out = F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True)
    return out.clamp_(0.0, 1.0) if mode == "bicubic" else out


def resize_shorter(x: Tensor, shorter: int, mode: str = "bilinear") -> Tensor:
    """Resize so the shorter side is ``shorter`` (torchvision ``Resize(int)`` rounding)."""
    h, w = x.shape[-2:]
    if h <= w:
        size = (shorter, int(shorter * w / h))
    else:
        size = (int(shorter * h / w), shorter)
    return resize(x, size, mode)


def cap_longer(x: Tensor, max_side: int, mode: str = "bilinear") -> Tensor:
    h, w = x.shape[-2:]
    if max(h, w) <= max_side:
        return x
    s = max_side / max(h, w)
    return resize(x, (max(1, round(h * s)), max(1, round(w * s))), mode)


def crop_offsets(h: int, w: int, size: int, batch: int, train: bool,
                 generator: Optional[torch.Generator]) -> Tensor:
    """``[B, 2]`` (top, left) of a ``size`` crop: centred (torchvision rounding) or random.
    A side shorter than ``size`` gets offset 0 (:func:`crop` pads it, centred)."""
    dh, dw = max(0, h - size), max(0, w - size)
    if not train:
        top, left = int(round(dh / 2.0)), int(round(dw / 2.0))
        return torch.tensor([[top, left]]).repeat(batch, 1)
    tops = torch.randint(0, dh + 1, (batch,), generator=generator)
    lefts = torch.randint(0, dw + 1, (batch,), generator=generator)
    return torch.stack([tops, lefts], 1)


def crop(x: Tensor, size: int, offsets: Tensor) -> Tensor:
    """Square crops of ``[B, C, H, W]`` at per-image ``offsets`` ``[B, 2]``."""
    h, w = x.shape[-2:]
    if h < size or w < size:  # pad like torchvision's CenterCrop does for small images
        ph, pw = max(0, size - h), max(0, size - w)
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    if bool((offsets == offsets[0]).all()):
        top, left = (int(v) for v in offsets[0])
        return x[..., top:top + size, left:left + size]
    return torch.stack([x[i, :, top:top + size, left:left + size]
                        for i, (top, left) in enumerate(offsets.tolist())])


def to_uint8(x: Tensor) -> Tensor:
    """Float images in [0, 1] -> uint8, the project's one 8-bit rounding: ``round(x * 255)`` in
    float32 (half to even, as numpy and diffusers' ``numpy_to_pil`` round), clamped to 0-255."""
    return torch.round(x.float() * 255.0).clamp_(0, 255).to(torch.uint8)


def quantize(x: Tensor) -> Tensor:
    """Round to 8-bit levels (what a uint8 image stored between steps would hold)."""
    return to_uint8(x).to(x.dtype) / 255.0


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def by_size(images: Images, fn: Callable[[Tensor], Tensor]) -> List[Tensor]:
    """Apply a batched, per-image ``fn`` to a list of ``[C, H, W]`` images, stacking equal
    sizes together; returns the per-image results in input order."""
    if isinstance(images, Tensor):
        out = fn(images)
        return list(out.unbind(0))
    groups: Dict[Tuple[int, ...], List[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(tuple(im.shape), []).append(i)
    results: List[Optional[Tensor]] = [None] * len(images)
    for idx in groups.values():
        out = fn(torch.stack([images[i] for i in idx]))
        for j, i in enumerate(idx):
            results[i] = out[j]
    return results  # type: ignore[return-value]


def _stack(parts: List[Tensor]) -> Tensor:
    return torch.stack(parts) if parts else torch.empty(0)


# --------------------------------------------------------------------------------------------
# the preprocessor
# --------------------------------------------------------------------------------------------


class Preprocessor:
    """Builds the technical and rationality inputs of a :class:`~joint_core.config.JointConfig`.

    Args:
        config: the model's :class:`PreprocessConfig`.
        localizer: an :class:`ArtifactLocalizer` (default: none - every patch clean).
        device: where the work runs (the model's device).
    """

    def __init__(self, config: PreprocessConfig, localizer: Optional[ArtifactLocalizer] = None,
                 device: Union[str, torch.device, None] = None):
        self.config = config
        self.localizer = localizer if localizer is not None else NoLocalizer()
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        t = config.technical
        self._priorities = partition_priorities(t.grid, seed=config.seed)

    def to(self, device: Union[str, torch.device]) -> "Preprocessor":
        self.device = torch.device(device)
        self.localizer = self.localizer.to(self.device)
        return self

    # -- entry points ---------------------------------------------------------------------

    def prepare(self, images: Images) -> List[Tensor]:
        """uint8 or float ``[3, H, W]`` images -> float32 in [0, 1] on the device, longer side
        capped at ``max_side``."""
        out = []
        for im in images:
            x = im.to(self.device, non_blocking=True)
            x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()  # one float copy, not two
            out.append(cap_longer(x[None], self.config.max_side, self.config.interpolation)[0])
        return out

    def __call__(self, images: Images) -> Tuple[Tensor, Tensor]:
        """Scoring inputs ``(technical, rationality)`` for prepared images."""
        return self.technical(images), self.rationality(images)

    def technical(self, images: Images, train: bool = False,
                  generator: Optional[torch.Generator] = None) -> Tensor:
        """Technical-branch input ``[B, 3, crop, crop]``, normalised."""
        t = self.config.technical
        mode = self.config.interpolation
        if t.sampling == "resize":
            x = _stack(by_size(images, lambda b: resize(b, (t.size, t.size), mode)))
            if x.numel() == 0:
                return self._empty(t.crop)
            if self.config.quantize:
                x = quantize(x)
            cells = cells_with_artifacts(self.localizer(x), t.grid) if t.partition else None
        else:
            mosaics = _stack(by_size(images, lambda b: self._fragments(b, train, generator)))
            if mosaics.numel() == 0:
                return self._empty(t.crop)
            x = mosaics[:, :3]
            cells = cells_with_artifacts(mosaics[:, 3] > 0.5, t.grid) if t.partition else None
        if t.partition:
            pri = self._priorities if not train else partition_priorities(
                t.grid, generator=generator, batch=x.shape[0])
            x = patch_partition(x, cells, t.grid, pri)
        if t.resize is not None:
            x = resize_shorter(x, t.resize, mode)
        x = crop(x, t.crop, crop_offsets(x.shape[-2], x.shape[-1], t.crop, x.shape[0],
                                         train, generator))
        if self.config.quantize:
            x = quantize(x)
        return normalize(x, *self.config.normalization("technical"))

    def rationality(self, images: Images, train: bool = False,
                    generator: Optional[torch.Generator] = None) -> Tensor:
        """Rationality-branch input ``[B, 3, crop, crop]``, normalised: the image, or its
        low-frequency map when the config says so (``rationality.low_frequency``)."""
        feeds_lfm = self.config.rationality.low_frequency
        img, lfm = self._rationality(images, train, generator, want_img=not feeds_lfm,
                                     want_lfm=feeds_lfm)
        return lfm if feeds_lfm else img

    def rationality_pair(self, images: Images, train: bool = False,
                         generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
        """The same crop of the image and of its low-frequency map, both normalised: the pair
        whose deep features the Wasserstein regulariser (paper eq. 3) brings together."""
        img, lfm = self._rationality(images, train, generator, want_img=True, want_lfm=True)
        return img, lfm

    def _rationality(self, images: Images, train: bool, generator: Optional[torch.Generator],
                     want_img: bool, want_lfm: bool) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        r = self.config.rationality
        k = int(want_img) + int(want_lfm)
        out = _stack(by_size(images, lambda b: self._rationality_group(
            b, train, generator, want_img, want_lfm)))
        if out.numel() == 0:
            out = torch.empty((0, 3 * k, r.crop, r.crop), device=self.device)
        mean, std = self.config.normalization("rationality")
        parts = [normalize(p, mean, std) for p in out.split(3, dim=1)]
        img = parts.pop(0) if want_img else None
        lfm = parts.pop(0) if want_lfm else None
        return img, lfm

    def _rationality_group(self, b: Tensor, train: bool, generator: Optional[torch.Generator],
                           want_img: bool, want_lfm: bool) -> Tensor:
        """Equal-size images -> ``[n, 3 * k, crop, crop]``: the image and/or its map, same crop."""
        r, lf = self.config.rationality, self.config.low_frequency
        full = want_lfm and lf.at == "full"   # map of the full-resolution image, then resized
        views: Dict[str, Tensor] = {}
        if want_img or not full:
            views["img"] = self._resize_rationality(b)
        if full:
            views["lfm"] = self._resize_rationality(low_frequency_map(b, lf))
        first = next(iter(views.values()))
        offsets = crop_offsets(first.shape[-2], first.shape[-1], r.crop, first.shape[0],
                               train, generator)
        views = {k: crop(v, r.crop, offsets) for k, v in views.items()}
        if self.config.quantize:
            views = {k: quantize(v) for k, v in views.items()}
        if want_lfm and not full:
            views["lfm"] = low_frequency_map(views["img"], lf)
        return torch.cat([views[k] for k, w in (("img", want_img), ("lfm", want_lfm)) if w], 1)

    # -- helpers --------------------------------------------------------------------------

    def _resize_rationality(self, b: Tensor) -> Tensor:
        r = self.config.rationality
        if r.native:
            return b
        if r.resize is None:
            return resize(b, (r.crop, r.crop), self.config.interpolation)
        return resize_shorter(b, r.resize, self.config.interpolation)

    def _fragments(self, b: Tensor, train: bool, generator: Optional[torch.Generator]) -> Tensor:
        """One fragment per grid cell at native resolution; returns ``[B, 4, G*f, G*f]`` with
        the artifact mask of the fragments in channel 3."""
        t = self.config.technical
        g, f = t.grid, t.fragment
        need = g * f
        h, w = b.shape[-2:]
        if min(h, w) < need:  # too small for the mosaic: enlarge, keeping the aspect ratio
            b = resize_shorter(b, need, self.config.interpolation)
            h, w = b.shape[-2:]
        mask = self.localizer(b) if t.partition else torch.zeros(
            (b.shape[0], h, w), dtype=torch.bool, device=b.device)
        n = b.shape[0]
        ch, cw = h / g, w / g  # cell size (fractional)
        starts_h = torch.floor(torch.arange(g) * ch)
        starts_w = torch.floor(torch.arange(g) * cw)
        room_h = torch.floor((torch.arange(1, g + 1) * ch)).clamp(max=h) - starts_h - f
        room_w = torch.floor((torch.arange(1, g + 1) * cw)).clamp(max=w) - starts_w - f
        room_h, room_w = room_h.clamp(min=0), room_w.clamp(min=0)
        if train:
            uh = torch.rand((n, g, g), generator=generator)
            uw = torch.rand((n, g, g), generator=generator)
        else:
            uh = torch.full((n, g, g), 0.5)
            uw = torch.full((n, g, g), 0.5)
        top = (starts_h.view(1, g, 1) + torch.floor(uh * (room_h.view(1, g, 1) + 1)).clamp(
            max=room_h.view(1, g, 1))).long()
        left = (starts_w.view(1, 1, g) + torch.floor(uw * (room_w.view(1, 1, g) + 1)).clamp(
            max=room_w.view(1, 1, g))).long()
        ar = torch.arange(f)
        rows = (top[..., None] + ar).to(b.device)            # [n, g, g, f]
        cols = (left[..., None] + ar).to(b.device)           # [n, g, g, f]
        bi = torch.arange(n, device=b.device).view(n, 1, 1, 1, 1)
        stack = torch.cat([b, mask[:, None].to(b.dtype)], 1)  # [n, 4, h, w]
        patches = stack[bi, :, rows[..., :, None], cols[..., None, :]]  # [n, g, g, f, f, 4]
        mosaic = patches.permute(0, 5, 1, 3, 2, 4).reshape(n, 4, g * f, g * f)
        return mosaic

    def _empty(self, size: int) -> Tensor:
        return torch.empty((0, 3, size, size), device=self.device)
