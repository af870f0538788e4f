"""Pieces shared by the callback and the best-of-N wrapper: the diffusers import guard, scorer
resolution, argument checks and the caller's view of an image batch. No scoring and no selection
here: scores come from :class:`joint_core.NaturalnessScorer`, and which images are kept from
:meth:`joint_core.ScoreResult.keep`."""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any, List, Optional, Union

import torch
from torch import Tensor

from joint_core.preprocess.pipeline import to_uint8
from joint_core.ranking import By, check_by

if TYPE_CHECKING:  # pragma: no cover
    from joint_core import NaturalnessScorer

INSTALL_HINT = "pip install 'joint-naturalness[diffusers]'"
OUTPUT_TYPES = ("pil", "np", "pt", "latent")
ScorerSpec = Union["NaturalnessScorer", str, os.PathLike, None]


def check_ranking(by: Optional[By]) -> Optional[By]:
    """``by`` for the hook: None (the model's default ranking), an axis or a weighted mix."""
    return None if by is None else check_by(by)


def require_diffusers(feature: str = "diffusers_hook") -> Any:
    """Import diffusers, or raise an ImportError saying how to install it."""
    try:
        return importlib.import_module("diffusers")
    except ImportError as e:
        raise ImportError(f"diffusers_hook.{feature} needs diffusers, which is not installed "
                          f"({e}). Install it with: {INSTALL_HINT}") from e


def resolve_scorer(scorer: ScorerSpec, device: Union[str, torch.device, None] = None) -> "NaturalnessScorer":
    """A :class:`NaturalnessScorer` as given, or loaded from a folder / hub id / shipped model name
    (``"default"``, ``"fast"``), or - for None - the default model (``$JOINT_MODEL``, the user
    cache, the shipped default). Raises :class:`joint_core.NoModelError` with instructions when no
    model exists."""
    from joint_core import NaturalnessScorer

    if isinstance(scorer, NaturalnessScorer):
        return scorer
    if scorer is None or isinstance(scorer, (str, os.PathLike)):
        return NaturalnessScorer.from_pretrained(scorer, device=device)
    raise TypeError("scorer must be a joint_core.NaturalnessScorer, a model folder or hub id, or None "
                    f"(the default model), got {type(scorer).__name__}")


def pipeline_device(pipe: Any) -> Optional[torch.device]:
    """The device a pipeline runs on (its execution device under offloading), if it says."""
    for attr in ("_execution_device", "device"):
        try:
            dev = getattr(pipe, attr)
        except Exception:  # properties of half-built pipelines may raise anything
            continue
        if isinstance(dev, (str, torch.device)):
            return torch.device(dev)
    return None


def check_output_type(output_type: str, arg: str = "output_type") -> str:
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"{arg} must be one of {list(OUTPUT_TYPES)}, got {output_type!r}")
    return output_type


def check_count(value: Any, arg: str, optional: bool = False) -> Optional[int]:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{arg} must be a positive integer{' or None' if optional else ''}, got {value!r}")
    return value


def caller_view(images: Tensor, output_type: str) -> List[Tensor]:
    """What the caller receives for ``output_type``, as one ``[3,H,W]`` tensor per image, so
    that the scores are those of the returned images: 8-bit for ``"pil"``, float32 for ``"np"``,
    the tensor itself for ``"pt"`` (and for ``"latent"``, whose decoded images the caller does not
    get). Images with NaN/inf values stay float, so the scorer reports them as unreadable."""
    if output_type == "np":
        images = images.float()
    if output_type != "pil":
        return list(images)
    finite = torch.isfinite(images.flatten(1)).all(dim=1).tolist()
    q = to_uint8(torch.nan_to_num(images.float()))
    return [q[i] if ok else images[i] for i, ok in enumerate(finite)]


def to_output(images: Tensor, output_type: str) -> Any:
    """``[B,3,H,W]`` images in [0, 1] (as diffusers returns for ``"pt"``) -> ``output_type``,
    the way ``VaeImageProcessor.postprocess`` converts them."""
    if output_type == "pt":
        return images
    arr = images.detach().cpu().permute(0, 2, 3, 1).float().numpy()
    if output_type == "np":
        return arr
    if output_type == "pil":
        from PIL import Image

        q = to_uint8(torch.nan_to_num(images.detach())).cpu().permute(0, 2, 3, 1).numpy()
        return [Image.fromarray(a) for a in q]
    raise ValueError(f"cannot convert images to output_type {output_type!r}")
