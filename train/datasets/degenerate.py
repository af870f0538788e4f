"""Synthetic broken frames (kind ``"degenerate"``), anchored at the bottom of the scale.

What a generation pipeline returns when it fails - a black frame (Stable Diffusion's safety
checker), a flat colour, pure noise (a latent that never denoised), blocky garbage, a frame
blurred to nothing - is rated by no human data set, so a model trained on rated sets alone can
score it anywhere (the first default model scored a flat grey frame above real photographs).
This reader writes such frames, deterministically from ``seed``, into ``root`` and rates every
one at the bottom of its scale (0 on ``(0, 1)``, i.e. 1 after the usual rescale onto 1-5) on the
label kinds in ``labels``. The frames are procedural: no rated image is reused, so they share no
content with any test set.
"""

from __future__ import annotations

import json
import os
from typing import List, Sequence, Tuple

import numpy as np

from ..labels import LABELS
from .base import PathLike, RatedDataset, Sample, register_dataset

DEGENERATE_SCALE = (0.0, 1.0)
KINDS = ("black", "flat", "noise", "smooth-noise", "blocks", "blur", "stripes")
_MANIFEST = "degenerate.json"


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(img, sigma=(sigma, sigma, 0), mode="reflect")


def _scene(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A few random coloured shapes on a gradient: something for the blur to destroy."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = rng.uniform(0, 1, 3) * (1 - yy[..., None]) + rng.uniform(0, 1, 3) * yy[..., None]
    for _ in range(int(rng.integers(3, 8))):
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.25)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 1, 3)
    return img


def _frame(kind: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """One float image ``[h, w, 3]`` in [0, 1]."""
    if kind == "black":
        return np.full((h, w, 3), rng.uniform(0, 0.03))
    if kind == "flat":
        grey = rng.uniform() < 0.5
        c = np.full(3, rng.uniform(0, 1)) if grey else rng.uniform(0, 1, 3)
        return np.broadcast_to(c, (h, w, 3)).copy()
    if kind == "noise":
        if rng.uniform() < 0.5:
            return rng.uniform(0, 1, (h, w, 3))
        x = rng.normal(rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.35), (h, w, 1 if rng.uniform() < 0.3 else 3))
        return np.broadcast_to(x, (h, w, 3)).copy()
    if kind == "smooth-noise":
        return np.clip(0.5 + 4 * (_blur(rng.uniform(-0.5, 0.5, (h, w, 3)), rng.uniform(2, 6))), 0, 1)
    if kind == "blocks":
        b = int(rng.choice([8, 16, 32, 64]))
        small = rng.uniform(0, 1, (-(-h // b), -(-w // b), 3))
        return np.repeat(np.repeat(small, b, 0), b, 1)[:h, :w]
    if kind == "blur":
        return _blur(_scene(rng, h, w), rng.uniform(12, 30))
    if kind == "stripes":
        period = rng.uniform(4, 40)
        axis = np.arange(w if rng.uniform() < 0.5 else h) * 2 * np.pi / period
        wave = 0.5 + 0.5 * np.sin(axis)
        img = wave[None, :, None] if wave.size == w else wave[:, None, None]
        return np.broadcast_to(img * rng.uniform(0.3, 1, 3), (h, w, 3)).copy()
    raise ValueError(f"unknown degenerate frame kind {kind!r}; known: {list(KINDS)}")


@register_dataset("degenerate")
def make_degenerate(root: PathLike, per_kind: int = 8, seed: int = 0,
                    kinds: Sequence[str] = KINDS,
                    sizes: Sequence[Tuple[int, int]] = ((512, 512), (512, 768), (1024, 1024)),
                    labels: Sequence[str] = LABELS) -> RatedDataset:
    """Write ``per_kind`` frames of each kind in ``kinds`` into ``root`` (PNG; reused when the
    folder already holds this exact set) and return them rated 0 on ``(0, 1)`` on ``labels``.

    Sizes cycle through ``sizes`` (height, width). Every frame is its own content group.
    """
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"kinds: unknown {unknown}; known: {list(KINDS)}")
    bad = [lab for lab in labels if lab not in LABELS]
    if bad or not labels:
        raise ValueError(f"labels must be a non-empty subset of {list(LABELS)}, got {list(labels)}")
    if int(per_kind) < 1:
        raise ValueError(f"per_kind must be >= 1, got {per_kind!r}")
    root = os.fspath(root)
    os.makedirs(root, exist_ok=True)
    spec = {"version": 1, "per_kind": int(per_kind), "seed": int(seed), "kinds": list(kinds),
            "sizes": [list(s) for s in sizes]}
    names = [f"{kind}_{i:03d}.png" for kind in kinds for i in range(int(per_kind))]
    manifest = os.path.join(root, _MANIFEST)
    fresh = True
    if os.path.isfile(manifest):
        with open(manifest, encoding="utf-8") as fh:
            fresh = json.load(fh) != spec or not all(os.path.isfile(os.path.join(root, n)) for n in names)
    if fresh:
        _write(root, spec, names)
    samples: List[Sample] = []
    for name in names:
        kind = name.rsplit("_", 1)[0]
        samples.append(Sample(name=name, path=os.path.join(root, name),
                              mos=0.0 if "mos" in labels else None,
                              mos_t=0.0 if "mos_t" in labels else None,
                              mos_r=0.0 if "mos_r" in labels else None,
                              extra={"kind": kind}))
    return RatedDataset(name="degenerate", samples=samples, scale=DEGENERATE_SCALE, distinct_content=True,
                        licence="synthetic (generated by joint's train package)")


def _write(root: str, spec: dict, names: Sequence[str]) -> None:
    from PIL import Image

    sizes = [tuple(s) for s in spec["sizes"]]
    for k, kind in enumerate(spec["kinds"]):
        for i in range(spec["per_kind"]):
            rng = np.random.default_rng([spec["seed"], k, i])
            h, w = sizes[(k + i) % len(sizes)]
            img = np.clip(_frame(kind, rng, h, w), 0, 1)
            Image.fromarray((img * 255).round().astype(np.uint8)).save(os.path.join(root, f"{kind}_{i:03d}.png"))
    with open(os.path.join(root, _MANIFEST), "w", encoding="utf-8") as fh:
        json.dump(spec, fh)
