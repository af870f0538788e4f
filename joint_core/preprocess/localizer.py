"""Perceptual-artifact localizers: image batch -> boolean artifact mask.

The interface is one call: ``localizer(images)`` with ``images`` ``[B, 3, H, W]`` float in
[0, 1] returns a ``[B, H, W]`` bool mask on the same device.

* :class:`NoLocalizer` - every pixel clean (the paper's "w/o localization" ablation).
* :class:`TorchScriptLocalizer` - the PAL4VST detector exported to TorchScript (``end2end.pt``,
  which the user supplies): run at its native 512x512 with mmseg's normalisation, one image at a
  time (the export has fixed shapes), the class map resized back with nearest neighbour.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from ..errors import LocalizerError

PAL4VST_MEAN = (123.675, 116.28, 103.53)
PAL4VST_STD = (58.395, 57.12, 57.375)


class ArtifactLocalizer:
    """Base class: subclasses implement :meth:`__call__`."""

    name = "base"

    def __call__(self, images: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def to(self, device: Union[str, torch.device]) -> "ArtifactLocalizer":
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NoLocalizer(ArtifactLocalizer):
    """Reports no artifacts: every patch is clean and may be moved."""

    name = "none"

    def __call__(self, images: Tensor) -> Tensor:
        b, _, h, w = images.shape
        return torch.zeros((b, h, w), dtype=torch.bool, device=images.device)


class TorchScriptLocalizer(ArtifactLocalizer):
    """A segmentation network saved with TorchScript, e.g. PAL4VST's ``end2end.pt``.

    The module gets ``[1, 3, S, S]`` (``S = input_size``), RGB on the 0..255 scale normalised
    with ``mean``/``std``; it may return class logits ``[1, K, S', S']`` (argmax is taken) or a
    class map ``[1, S', S']`` / ``[1, 1, S', S']`` / ``[S', S']``. Pixels of class
    ``artifact_class`` are artifacts.
    """

    name = "pal4vst"

    def __init__(self, path: Union[str, os.PathLike], input_size: int = 512,
                 mean: Sequence[float] = PAL4VST_MEAN, std: Sequence[float] = PAL4VST_STD,
                 artifact_class: int = 1, device: Union[str, torch.device, None] = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise LocalizerError(f"artifact localizer {self.path}: no such file")
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated, but it is PAL4VST's format
                warnings.simplefilter("ignore", FutureWarning)
                self.module = torch.jit.load(str(self.path), map_location=device or "cpu")
        except Exception as e:  # torch raises RuntimeError / ValueError variants
            raise LocalizerError(
                f"artifact localizer {self.path}: not a TorchScript file ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''})") from None
        self.module.eval()
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.input_size = int(input_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.artifact_class = int(artifact_class)

    def to(self, device: Union[str, torch.device]) -> "TorchScriptLocalizer":
        self.device = torch.device(device)
        self.module = self.module.to(self.device)
        return self

    @torch.inference_mode()
    def __call__(self, images: Tensor) -> Tensor:
        b, _, h, w = images.shape
        s = self.input_size
        x = F.interpolate(images.float(), size=(s, s), mode="bilinear", align_corners=False,
                          antialias=True)
        x = (x * 255.0 - self.mean.to(x.device)) / self.std.to(x.device)
        x = x.to(self.device)
        masks = []
        for i in range(b):
            out = self.module(x[i:i + 1])
            masks.append(self._to_class_map(out))
        classes = torch.stack(masks).to(images.device)            # [B, S', S']
        resized = F.interpolate(classes[:, None].float(), size=(h, w), mode="nearest")[:, 0]
        return resized.round().long() == self.artifact_class

    def _to_class_map(self, out) -> Tensor:
        if isinstance(out, (list, tuple)):
            if not out:
                raise LocalizerError(f"{self.path}: returned an empty sequence")
            out = out[0]
        if isinstance(out, dict):
            out = next(iter(out.values()))
        if not isinstance(out, Tensor):
            raise LocalizerError(f"{self.path}: returned {type(out).__name__}, not a tensor")
        if out.dim() == 4 and out.shape[1] > 1:
            return out[0].argmax(0)
        if out.dim() == 4 and out.shape[1] == 1:
            return out[0, 0]
        if out.dim() == 3 and out.shape[0] == 1:
            return out[0]
        if out.dim() == 2:
            return out
        raise LocalizerError(f"{self.path}: output of shape {tuple(out.shape)} is not a class map "
                             "or [1, K, H, W] logits")

    def __repr__(self) -> str:
        return f"TorchScriptLocalizer({str(self.path)!r}, input_size={self.input_size})"


def build_localizer(localizer: Union[None, str, os.PathLike, ArtifactLocalizer],
                    device: Union[str, torch.device, None] = None) -> ArtifactLocalizer:
    """``None`` / ``"none"`` -> :class:`NoLocalizer`; a path -> :class:`TorchScriptLocalizer`;
    an :class:`ArtifactLocalizer` is returned as is (moved to ``device``)."""
    if localizer is None or (isinstance(localizer, str) and localizer.lower() == "none"):
        return NoLocalizer()
    if isinstance(localizer, ArtifactLocalizer):
        return localizer.to(device) if device is not None else localizer
    if isinstance(localizer, (str, os.PathLike)):
        return TorchScriptLocalizer(localizer, device=device)
    raise TypeError(f"localizer must be None, 'none', a path to a TorchScript file or an "
                    f"ArtifactLocalizer, got {type(localizer).__name__}")
