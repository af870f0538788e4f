"""Pieces shared by the callback and the best-of-N wrapper: the diffusers import guard, scorer
resolution, the caller's view of an image batch, and per-prompt selection. No scoring here:
scores come from :class:`joint_core.NaturalnessScorer`."""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

from joint_core.scorer import check_axis, check_weights

if TYPE_CHECKING:  # pragma: no cover
    from joint_core import NaturalnessScorer, ScoreResult

INSTALL_HINT = "pip install 'joint-naturalness[diffusers]'"
OUTPUT_TYPES = ("pil", "np", "pt", "latent")
ScorerSpec = Union["NaturalnessScorer", str, os.PathLike, None]
By = Union[str, Mapping[str, float]]


def check_by(by: Any) -> Union[str, Dict[str, float]]:
    """``by``: one axis name, or a weighted mix ``{axis: weight}`` (e.g. ``{"naturalness": 1,
    "technical": 0.25}``: the default model's fusion leans on rationality, so a technical
    share makes blurred or noisy candidates lose)."""
    if isinstance(by, str):
        return check_axis(by)
    if isinstance(by, Mapping):
        try:
            return check_weights(by)
        except ValueError as e:
            raise ValueError(f"by: {e}") from None
    raise TypeError(f"by must be an axis name or a {{axis: weight}} mix, got {type(by).__name__}")


def describe_by(by: By) -> str:
    if isinstance(by, str):
        return by
    return " + ".join(f"{w:g}*{ax}" for ax, w in by.items())


def require_diffusers(feature: str = "diffusers_hook") -> Any:
    """Import diffusers, or raise an ImportError saying how to install it."""
    try:
        return importlib.import_module("diffusers")
    except ImportError as e:
        raise ImportError(f"diffusers_hook.{feature} needs diffusers, which is not installed "
                          f"({e}). Install it with: {INSTALL_HINT}") from e


def resolve_scorer(scorer: ScorerSpec, device: Union[str, torch.device, None] = None) -> "NaturalnessScorer":
    """A :class:`NaturalnessScorer` as given, or loaded from a folder / hub id, or - for None - the
    default model (``$JOINT_MODEL``, the user cache, the shipped default). Raises
    :class:`joint_core.NoModelError` with instructions when no model exists."""
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


def check_threshold(threshold: Any) -> Optional[float]:
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold != threshold:
        raise ValueError(f"threshold must be a number on the model's score scale (1-5) or None, got {threshold!r}")
    return float(threshold)


def to_uint8(images: Tensor) -> Tensor:
    """``[B,3,H,W]`` in [0, 1] -> uint8 exactly as diffusers' ``numpy_to_pil`` rounds
    (``(x * 255).round()`` in float32, half to even)."""
    return torch.round(images.float() * 255.0).to(torch.uint8)


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


def select(result: "ScoreResult", group_size: int, by: By, k: Optional[int] = None,
           threshold: Optional[float] = None, sort: bool = False) -> List[int]:
    """Indices to keep, in output order, choosing within consecutive groups of ``group_size``
    (one group per prompt). With ``k`` or ``sort`` a group is ordered best first (ties keep
    generation order); ``threshold`` drops images scoring below it; ``k`` keeps the best k. When
    something is dropped, unscored images (NaN) are dropped too; sorting alone puts them last.
    ``by`` is an axis or a weighted mix (the threshold then applies to the mix)."""
    by = check_by(by)
    n = len(result)
    if n % group_size:
        raise ValueError(f"{n} images cannot be split into groups of {group_size} (num_images_per_prompt)")
    values = result.scores(by)
    prune = k is not None or threshold is not None
    kept: List[int] = []
    for start in range(0, n, group_size):
        group = list(range(start, start + group_size))
        if k is not None or sort:
            order = [group[i] for i in result.select(group).ranking(by)]
        else:
            order = group
        if prune:
            order = [i for i in order if i not in result.errors]
        if threshold is not None:
            order = [i for i in order if float(values[i]) >= threshold]
        if k is not None:
            order = order[:k]
        kept.extend(order)
    return kept


def group_of(indices: Sequence[int], group_size: int) -> List[int]:
    return [i // group_size for i in indices]
