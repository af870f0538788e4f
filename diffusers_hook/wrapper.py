"""``best_of_n``: generate N seeded candidates per prompt, score them once, keep the best K.

    out = best_of_n(pipe, ["a fox", "a lighthouse"], n=8, k=2, seed=0)
    out.images              # 4 images: prompt 0's best two, then prompt 1's, best first
    out.scores.naturalness  # their scores; out.all_scores has all 16 candidates
    out.seeds               # regenerate a winner: generator=torch.Generator("cpu").manual_seed(seed)
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from diffusers.utils import BaseOutput
from torch import Tensor

from joint_core import ScoreResult
from joint_core.result import By, check_threshold, describe_by

from ._common import (ScorerSpec, caller_view, check_count, check_output_type, check_ranking, pipeline_device,
                      resolve_scorer, to_output)
from .decode import decode_latents, pipeline_family

# pipeline arguments best_of_n sets itself, and what to use instead
_RESERVED = {
    "generator": "seed= (one generator per candidate is seeded from it)",
    "latents": "seed= (candidates start from seeded noise)",
    "num_images_per_prompt": "n=",
    "return_dict": "nothing (best_of_n always returns a BestOfNOutput)",
}


@dataclass
class BestOfNOutput(BaseOutput):
    """Result of :func:`best_of_n`. Candidates are numbered prompt-major: candidate ``j`` of
    prompt ``p`` has index ``p * n + j`` in ``all_scores`` and ``all_seeds``.

    Attributes:
        images: the kept images in the requested ``output_type`` (a list of PIL images, an array
            ``[K, H, W, 3]``, a tensor ``[K, 3, H, W]`` in [0, 1], or the latents), grouped by
            prompt in prompt order, best first within a prompt.
        scores: :class:`joint_core.ScoreResult` of the kept images, aligned with ``images``.
        all_scores: scores of every candidate, by candidate index.
        indices: candidate index of each kept image.
        prompt_indices: prompt index of each kept image.
        seeds: seed of each kept image (regenerate it with
            ``generator=torch.Generator(generator_device).manual_seed(seed)``).
        all_seeds: seed of every candidate, by candidate index.
        nsfw_content_detected: the pipeline's NSFW flags of the kept images, when it reports them.
    """

    images: Any
    scores: ScoreResult
    all_scores: ScoreResult
    indices: List[int]
    prompt_indices: List[int]
    seeds: List[int]
    all_seeds: List[int]
    nsfw_content_detected: Optional[List[bool]] = None


def _num_prompts(prompt: Any, pipe_kwargs: Dict[str, Any]) -> int:
    if isinstance(prompt, str):
        return 1
    if isinstance(prompt, (list, tuple)):
        if not prompt or not all(isinstance(p, str) for p in prompt):
            raise ValueError("prompt must be a string or a non-empty list of strings")
        return len(prompt)
    if prompt is not None:
        raise TypeError(f"prompt must be a string, a list of strings or None, got {type(prompt).__name__}")
    embeds = pipe_kwargs.get("prompt_embeds")
    return int(embeds.shape[0]) if isinstance(embeds, Tensor) else 1


def _seeds(seed: Union[int, Sequence[int]], total: int) -> List[int]:
    if isinstance(seed, bool):
        raise TypeError("seed must be an int or a sequence of ints, got a bool")
    if isinstance(seed, int):
        seeds = [seed + i for i in range(total)]
    elif isinstance(seed, (list, tuple, range)):
        seeds = list(seed)
        if len(seeds) != total:
            raise ValueError(f"seed: a sequence needs one seed per candidate (prompts x n = {total}), "
                             f"got {len(seeds)}")
    else:
        raise TypeError(f"seed must be an int or a sequence of ints, got {type(seed).__name__}")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2 ** 64:
            raise ValueError(f"seed: every seed must be an int in [0, 2**64), got {s!r}")
    return seeds


def _check_pipe(pipe: Any) -> None:
    if not callable(pipe):
        raise TypeError(f"pipe must be a diffusers pipeline, got {type(pipe).__name__}")
    try:
        params = inspect.signature(pipe.__call__).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    missing = [a for a in ("num_images_per_prompt", "generator", "output_type") if a not in params]
    if missing:
        raise TypeError(f"{type(pipe).__name__}.__call__ takes no {missing}; best_of_n needs a pipeline "
                        "that takes num_images_per_prompt, generator and output_type='pt'")


def _expand_per_prompt(kwargs: Dict[str, Any], num_prompts: int, repeats: int) -> Dict[str, Any]:
    """Repeat each prompt's embedding tensors ``repeats`` times (prompt-major), for pipelines that
    do not expand precomputed embeddings by num_images_per_prompt (Flux, for one)."""
    out = dict(kwargs)
    for key, value in kwargs.items():
        if isinstance(value, Tensor) and (key.endswith("_embeds") or key.endswith("_attention_mask")):
            if value.shape[0] != num_prompts:
                raise ValueError(f"{key} has batch size {value.shape[0]} but prompt_embeds has "
                                 f"{num_prompts}; give one row per prompt")
            out[key] = value.repeat_interleave(repeats, dim=0)
    return out


def _images_of(out: Any) -> Any:
    images = getattr(out, "images", None)
    if images is None and isinstance(out, (tuple, list)) and out:
        images = out[0]
    if images is None:
        raise TypeError(f"the pipeline returned {type(out).__name__} without images")
    return images


def _as_tensor(images: Any) -> Tensor:
    """The pipeline's ``output_type="pt"`` images as ``[B, 3, H, W]`` in [0, 1] (also accepts
    pipelines that ignore output_type and return arrays or PIL images)."""
    if isinstance(images, Tensor):
        return images if images.ndim == 4 else images[None]
    if isinstance(images, np.ndarray):  # [B, H, W, 3], as diffusers' "np" output
        t = torch.from_numpy(np.ascontiguousarray(images))
        t = (t if t.ndim == 4 else t[None]).permute(0, 3, 1, 2)
        return t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    if isinstance(images, (list, tuple)) and images:
        if all(isinstance(i, Tensor) for i in images):
            return torch.stack(list(images))
        from PIL import Image

        if all(isinstance(i, Image.Image) for i in images):
            arr = np.stack([np.asarray(i.convert("RGB")) for i in images])
            return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0
    raise TypeError(f"cannot read the pipeline's images ({type(images).__name__}); best_of_n needs a "
                    "pipeline that returns image tensors for output_type='pt'")


def best_of_n(pipe: Any, prompt: Union[str, List[str], None] = None, n: int = 4, k: int = 1,
              by: Optional[By] = None, threshold: Optional[float] = None,
              seed: Union[int, Sequence[int]] = 0, *, scorer: ScorerSpec = None,
              batch_size: Optional[int] = None, output_type: str = "pil", generator_device: str = "cpu",
              score_batch_size: int = 16, **pipe_kwargs: Any) -> BestOfNOutput:
    """Generate ``n`` candidates per prompt, score them with the naturalness model, keep the best ``k``.

    Args:
        pipe: a diffusers pipeline whose ``__call__`` takes ``num_images_per_prompt``, ``generator``
            and ``output_type`` (any pipeline that returns images; text-to-image, img2img, ...).
        prompt: a prompt or a list of prompts; None when passing ``prompt_embeds`` in ``pipe_kwargs``
            (then its first dimension is the number of prompts).
        n: candidates per prompt. k: images kept per prompt (``k > n`` keeps all ``n``).
        by: the axis to rank by (``"naturalness"``, ``"technical"`` or ``"rationality"``), or a
            weighted mix such as ``{"naturalness": 1, "technical": 0.25}`` (``sum(w*score)/sum(w)``);
            None (default): the model's own ranking (``scorer.config.ranking``).
        threshold: drop candidates whose ``by`` score is below it; a prompt can then keep fewer than
            ``k`` images, or none (a warning says which).
        seed: candidate ``i`` (prompt-major) uses ``seed + i``; or a sequence of one seed per candidate.
        scorer: a :class:`joint_core.NaturalnessScorer`, a model folder or hub id, or None for the
            default model (loaded before generating, on the pipeline's device; pass a scorer to
            reuse it across calls).
        batch_size: candidates per prompt per pipeline call (one call makes ``prompts x batch_size``
            images); None generates all ``n`` in one call. Results do not depend on it, up to
            floating-point rounding of different batch sizes.
        output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"`` for the returned images. The
            pipeline runs with ``"pt"``; for ``"latent"`` it runs with ``"latent"`` and the latents
            are decoded here to be scored (SD/SDXL/SD3/Flux only). The scores are those of the
            images as returned (8-bit for ``"pil"``).
        generator_device: device of the seeded generators ("cpu" makes seeds portable).
        score_batch_size: images per scoring forward pass.
        **pipe_kwargs: passed to the pipeline (num_inference_steps, guidance_scale, height, ...).
    """
    n = check_count(n, "n")
    k = check_count(k, "k")
    by = check_ranking(by)
    threshold = check_threshold(threshold)
    check_output_type(output_type)
    check_count(batch_size, "batch_size", optional=True)
    check_count(score_batch_size, "score_batch_size")
    for arg, instead in _RESERVED.items():
        if arg in pipe_kwargs:
            raise ValueError(f"best_of_n sets {arg} itself; use {instead}")
    _check_pipe(pipe)
    num_prompts = _num_prompts(prompt, pipe_kwargs)
    seeds = _seeds(seed, num_prompts * n)
    if output_type == "latent":
        pipeline_family(pipe)          # fail before generating if the latents cannot be decoded
    scorer = resolve_scorer(scorer, device=pipeline_device(pipe))  # likewise for a missing model

    candidates = _generate(pipe, prompt, num_prompts, n, seeds, min(batch_size or n, n), output_type,
                           generator_device, pipe_kwargs)
    all_images, all_flags = candidates.images, candidates.nsfw

    result = scorer.score(caller_view(all_images, output_type), batch_size=score_batch_size, progress=False)
    kept = result.keep(by, k=k, threshold=threshold, group_size=n, sort=True)
    if threshold is not None:
        empty = sorted(set(range(num_prompts)) - {i // n for i in kept})
        if empty:
            what = describe_by(result.resolve_by(by))
            warnings.warn(f"best_of_n: no candidate of prompt(s) {empty} scored {what} >= {threshold}; "
                          f"{len(kept)} image(s) returned", stacklevel=2)
    index = torch.as_tensor(kept, dtype=torch.long)
    if output_type == "latent":
        images_out = candidates.latents[index.to(candidates.latents.device)]
    else:
        images_out = to_output(all_images[index.to(all_images.device)], output_type)
    return BestOfNOutput(
        images=images_out,
        scores=result.select(kept),
        all_scores=result,
        indices=kept,
        prompt_indices=[i // n for i in kept],
        seeds=[seeds[i] for i in kept],
        all_seeds=seeds,
        nsfw_content_detected=None if all_flags is None else [all_flags[i] for i in kept],
    )


@dataclass
class _Candidates:
    images: Tensor                  # [prompts * n, 3, H, W] in [0, 1], candidate order (prompt-major)
    latents: Optional[Tensor]       # the same order, for output_type="latent"
    nsfw: Optional[List[bool]]      # the pipeline's NSFW flags, when it reports them for every call


def _generate(pipe: Any, prompt: Any, num_prompts: int, n: int, seeds: List[int], chunk: int, output_type: str,
              generator_device: str, pipe_kwargs: Dict[str, Any]) -> _Candidates:
    """Run the pipeline in calls of ``chunk`` candidates per prompt, one seeded generator per
    candidate, and return every candidate in candidate order whatever the chunking."""
    embeds_mode = prompt is None and any(isinstance(v, Tensor) and key.endswith("prompt_embeds")
                                         for key, v in pipe_kwargs.items())
    run_type = "latent" if output_type == "latent" else "pt"
    parts, rows, flags, latent_parts = [], [], [], []
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        order = [p * n + j for p in range(num_prompts) for j in range(start, stop)]
        kwargs = dict(pipe_kwargs)
        if embeds_mode:
            kwargs = _expand_per_prompt(kwargs, num_prompts, stop - start)
            kwargs["num_images_per_prompt"] = 1
        else:
            kwargs["num_images_per_prompt"] = stop - start
        if prompt is not None:
            kwargs["prompt"] = prompt
        generators = [torch.Generator(generator_device).manual_seed(seeds[i]) for i in order]
        out = pipe(generator=generators, output_type=run_type, return_dict=True, **kwargs)
        images = _images_of(out)
        if run_type == "latent":
            latent_parts.append(images)
            images = decode_latents(pipe, images, pipe_kwargs.get("height"), pipe_kwargs.get("width"))
        images = _as_tensor(images)
        if images.shape[0] != len(order):
            raise RuntimeError(f"{type(pipe).__name__} returned {images.shape[0]} images for {len(order)} "
                               "candidates; best_of_n needs one image per candidate")
        nsfw = getattr(out, "nsfw_content_detected", None)
        flags.append(list(nsfw) if nsfw is not None and len(nsfw) == len(order) else None)
        parts.append(images)
        rows.extend(order)

    perm = torch.as_tensor(np.argsort(np.asarray(rows), kind="stable"))
    all_images = torch.cat([p.to(parts[0].device) for p in parts])[perm.to(parts[0].device)]
    latents = None
    if latent_parts:
        latents = torch.cat([p.to(latent_parts[0].device) for p in latent_parts])
        latents = latents[perm.to(latents.device)]
    all_flags = None
    if all(f is not None for f in flags):
        flat = [b for f in flags for b in f]
        all_flags = [bool(flat[i]) for i in perm.tolist()]
    return _Candidates(all_images, latents, all_flags)
