"""diffusers_hook: naturalness scores for every image a diffusers pipeline generates.

Two idioms, both scoring through :class:`joint_core.NaturalnessScorer`::

    from diffusers_hook import naturalness_filter, best_of_n

    # 1. one extra argument: score at the last denoising step, keep the best 2, best first
    cb = naturalness_filter(k=2)
    images = pipe(prompt, num_images_per_prompt=4, callback_on_step_end=cb).images
    cb.kept_scores.naturalness, cb.kept_indices

    # 2. one wrapper: N seeded candidates per prompt, the top K returned with scores and seeds
    out = best_of_n(pipe, prompt, n=8, k=2, seed=0)
    out.images, out.scores.naturalness, out.seeds

diffusers is imported only when one of these names is used, so ``import diffusers_hook``
works without it; using them without diffusers raises an ImportError that says what to install.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["BestOfNOutput", "NaturalnessFilter", "best_of_n", "decode_latents", "naturalness_filter"]

# public name -> submodule that defines it (imported on first use, because it imports diffusers)
_LAZY = {
    "NaturalnessFilter": "callback",
    "naturalness_filter": "callback",
    "BestOfNOutput": "wrapper",
    "best_of_n": "wrapper",
    "decode_latents": "decode",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'diffusers_hook' has no attribute {name!r}")
    from ._common import require_diffusers

    require_diffusers(name)
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
