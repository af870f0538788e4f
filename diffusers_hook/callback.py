"""``naturalness_filter``: a diffusers ``PipelineCallback`` that scores the batch at the last
denoising step and can reorder it best first or keep the best ones.

    cb = naturalness_filter(k=2, num_images_per_prompt=4)
    out = pipe(prompts, num_images_per_prompt=4, callback_on_step_end=cb)
    out.images                      # 2 per prompt, best first
    cb.kept_scores.naturalness      # their scores; cb.scores holds every generated image's

How it works: at the last step (``step_index == pipeline.num_timesteps - 1``) the callback decodes
``latents`` with the pipeline's own VAE (see :mod:`diffusers_hook.decode`), scores the images with
:class:`joint_core.NaturalnessScorer`, and returns the latents reordered or pruned, so the
pipeline's own decode and output come back filtered/sorted. It never touches earlier steps:
schedulers keep per-sample state across steps. Cost: one extra VAE decode of the batch, plus
scoring.

Pruning (``k``/``threshold``) changes only ``latents``. That is safe at the last step of the
supported text-to-image families (SD 1.x/2.x, SDXL, SD3, Flux.1), whose code after the loop reads
only ``latents`` (``prompt_embeds`` only for its dtype); the other per-sample tensors
(``prompt_embeds``, ``add_text_embeds``, ...) are not used again, so they are left as they are.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, List, Optional

import torch
from diffusers.callbacks import PipelineCallback
from torch import Tensor


from joint_core.result import By, check_threshold, describe_by

from ._common import ScorerSpec, caller_view, check_count, check_output_type, check_ranking, resolve_scorer
from .decode import check_decodable, decode_latents


def last_step_index(pipeline: Any) -> int:
    """Index of the pipeline's last denoising step, from ``num_timesteps`` (or ``_num_timesteps``)
    that diffusers pipelines set to ``len(timesteps)`` before their loop."""
    for attr in ("num_timesteps", "_num_timesteps"):
        try:
            value = getattr(pipeline, attr)
        except AttributeError:
            continue
        if isinstance(value, Tensor) and value.numel() == 1:
            value = int(value.item())
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value - 1
    raise RuntimeError(
        f"{type(pipeline).__name__} exposes neither num_timesteps nor _num_timesteps, so "
        "naturalness_filter cannot tell its last denoising step; use diffusers_hook.best_of_n instead")


class NaturalnessFilter(PipelineCallback):
    """Scores a pipeline's images at the last denoising step; optionally sorts or prunes them.

    Args:
        scorer: a :class:`joint_core.NaturalnessScorer`, a model folder or hub id, or None for the
            default model. Loaded at the first denoising step (so a missing model fails before the
            generation, with :class:`joint_core.NoModelError`), on the pipeline's device.
        by: the score axis to rank by: ``"naturalness"``, ``"technical"`` or ``"rationality"``, or a
            weighted mix such as ``{"naturalness": 1, "technical": 0.25}`` (``sum(w*score)/sum(w)``);
            None (default): the model's own ranking (``scorer.config.ranking``).
        k: keep the best ``k`` images of each prompt, best first (``k`` larger than
            ``num_images_per_prompt`` keeps them all).
        threshold: drop images whose ``by`` score is below it (1-5 scale).
        sort: reorder each prompt's images best first without dropping any (implied by ``k``).
        num_images_per_prompt: the value given to the pipeline; selection then happens per prompt
            (the batch is prompt-major). None: the whole batch is one group.
        output_type: the ``output_type`` given to the pipeline, so that the scores are those of
            the images it returns (``"pil"`` output is 8-bit; a mismatch changes the scores only
            by that rounding).
        height, width: the image size, needed to unpack Flux latents when it is not the default.
        batch_size: images per scoring forward pass.
        decode: ``fn(pipeline, latents) -> [B,3,H,W]`` images in [0, 1], for pipeline families
            that :func:`diffusers_hook.decode_latents` does not know.

    Results, set at the last step (reset at step 0 of each run):
        ``scores``: :class:`joint_core.ScoreResult` of every generated image, in generation order.
        ``kept_indices``: generation indices of the images the pipeline now returns, in order.
        ``kept_scores``: ``scores.select(kept_indices)``, aligned with the pipeline's output.
        ``passed_indices``: the indices that survived ``k``/``threshold`` (equal to
        ``kept_indices`` unless nothing passed, in which case the single best image is kept -
        a pipeline cannot decode an empty batch - and a warning says so).
    """

    tensor_inputs = ["latents"]

    def __init__(self, scorer: ScorerSpec = None, *, by: Optional[By] = None, k: Optional[int] = None,
                 threshold: Optional[float] = None, sort: bool = False,
                 num_images_per_prompt: Optional[int] = None, output_type: str = "pil",
                 height: Optional[int] = None, width: Optional[int] = None, batch_size: int = 16,
                 decode: Optional[Callable[[Any, Tensor], Tensor]] = None):
        super().__init__()
        by = check_ranking(by)
        check_count(k, "k", optional=True)
        threshold = check_threshold(threshold)
        check_count(num_images_per_prompt, "num_images_per_prompt", optional=True)
        check_output_type(output_type)
        check_count(batch_size, "batch_size")
        if decode is not None and not callable(decode):
            raise TypeError(f"decode must be callable fn(pipeline, latents) -> images, got {type(decode).__name__}")
        self.register_to_config(by=by, k=k, threshold=threshold, sort=bool(sort),
                                num_images_per_prompt=num_images_per_prompt, output_type=output_type,
                                height=height, width=width, batch_size=batch_size)
        self._scorer_spec = scorer
        self._scorer = None
        self._decode = decode
        self.reset()

    def reset(self) -> None:
        """Forget the results of the previous run."""
        self.scores = None
        self.kept_scores = None
        self.kept_indices: Optional[List[int]] = None
        self.passed_indices: Optional[List[int]] = None

    @property
    def scorer(self):
        """The scorer, loaded on first use (on the pipeline's device at the first step)."""
        if self._scorer is None:
            self._scorer = resolve_scorer(self._scorer_spec)
        return self._scorer

    def callback_fn(self, pipeline, step_index: int, timestep, callback_kwargs: Dict[str, Any]) -> Dict[str, Any]:
        if "latents" not in callback_kwargs:
            raise KeyError(
                "naturalness_filter needs 'latents' in the callback tensors; pass "
                "callback_on_step_end_tensor_inputs including 'latents' (Flux-family pipelines do not "
                "read a callback's tensor_inputs: pass callback_on_step_end_tensor_inputs=cb.tensor_inputs)")
        latents = callback_kwargs["latents"]
        if step_index == 0:
            # fail before the generation, not after it: unknown family, Flux size, missing model
            self.reset()
            self._group_size(latents.shape[0])
            if self._decode is None:
                check_decodable(pipeline, latents, self.config.height, self.config.width)
        if self._scorer is None:
            self._scorer = resolve_scorer(self._scorer_spec, device=latents.device)
        if step_index != last_step_index(pipeline):
            return callback_kwargs
        kept = self._score_and_select(pipeline, latents)
        if kept != list(range(latents.shape[0])):
            callback_kwargs["latents"] = latents[torch.tensor(kept, device=latents.device)]
        return callback_kwargs

    def _group_size(self, n: int) -> int:
        group = self.config.num_images_per_prompt or n
        if n % group:
            raise ValueError(f"num_images_per_prompt={group} does not divide the batch of {n} latents; "
                             "pass the value given to the pipeline")
        return group

    def _score_and_select(self, pipeline, latents: Tensor) -> List[int]:
        cfg = self.config
        group = self._group_size(latents.shape[0])
        if self._decode is not None:
            images = self._decode(pipeline, latents)
        else:
            images = decode_latents(pipeline, latents, cfg.height, cfg.width)
        result = self._scorer.score(caller_view(images, cfg.output_type), batch_size=cfg.batch_size,
                                    progress=False)
        passed = result.keep(cfg.by, k=cfg.k, threshold=cfg.threshold, group_size=group, sort=cfg.sort)
        kept = passed
        if not passed:
            kept = result.ranking(cfg.by)[:1]
            why = (f"scored {describe_by(result.resolve_by(cfg.by))} >= {cfg.threshold}"
                   if cfg.threshold is not None else "could be scored")
            warnings.warn(f"naturalness_filter: no image {why}; a pipeline "
                          f"cannot return an empty batch, so only the best one (index {kept[0]}) is kept. "
                          "cb.passed_indices is empty.", stacklevel=2)
        self.scores = result
        self.passed_indices = passed
        self.kept_indices = kept
        self.kept_scores = result.select(kept)
        return kept


naturalness_filter = NaturalnessFilter
