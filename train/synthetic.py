"""A synthetic rated image set with known technical and rationality quality (for tests, demos).

Each image is a procedural scene (a gradient sky, a ground band, a few shapes in a plausible
layout) degraded on two independent axes:

* technical level ``d`` in [0, 1]: Gaussian blur, additive noise and lost contrast grow with
  ``d``; ``MOS_tech = 5 - 4 d``;
* rationality level ``s`` in {0, 0.5, 1}: the layout is broken (blocks of the scene swapped,
  sky and ground exchanged) and the colours made implausible; ``MOS_rat = 5 - 4 s``;

``MOS_nat = (0.145 MOS_tech + 0.769 MOS_rat) / 0.914`` (the paper's weighting, renormalised to
1-5). Written in the AGIN layout: ``labels.csv`` (filename, MOS_nat, MOS_tech, MOS_rat, scene)
and PNG files named ``scene<k>_<i>.png`` (content group rule ``^(scene\\d+)_``).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Tuple

import numpy as np

GROUP_RULE = r"^(scene\d+)_"


def _scene(rng: np.random.Generator, size: int) -> np.ndarray:
    h = w = size
    y = np.linspace(0, 1, h)[:, None, None]
    sky = np.array([0.35, 0.55, 0.95]) * (1 - 0.5 * y) + np.array([0.9, 0.9, 1.0]) * 0.5 * y
    img = np.broadcast_to(sky, (h, w, 3)).copy()
    horizon = int(h * rng.uniform(0.55, 0.7))
    ground = np.array([0.25, 0.5, 0.2]) * rng.uniform(0.8, 1.2)
    img[horizon:] = ground
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(rng.integers(2, 4)):  # houses / trees standing on the ground
        cx = rng.uniform(0.15, 0.85) * w
        bw, bh = rng.uniform(0.1, 0.2) * w, rng.uniform(0.15, 0.3) * h
        colour = rng.uniform(0.3, 0.8, 3) * np.array([1.0, 0.8, 0.6])
        mask = (np.abs(xx - cx) < bw / 2) & (yy < horizon) & (yy > horizon - bh)
        img[mask] = colour
    sun = (xx - rng.uniform(0.2, 0.8) * w) ** 2 + (yy - 0.18 * h) ** 2 < (0.07 * w) ** 2
    img[sun] = [1.0, 0.9, 0.4]
    return img


def _break_layout(img: np.ndarray, s: float, rng: np.random.Generator) -> np.ndarray:
    if s <= 0:
        return img
    h = img.shape[0]
    out = np.concatenate([img[h // 2:], img[: h // 2]], 0)      # ground above the sky
    if s >= 1:
        g = 4
        p = h // g
        blocks = [out[i * p:(i + 1) * p, j * p:(j + 1) * p] for i in range(g) for j in range(g)]
        order = rng.permutation(len(blocks))
        rows = [np.concatenate([blocks[order[i * g + j]] for j in range(g)], 1) for i in range(g)]
        out = np.concatenate(rows, 0)
        out = out[..., [2, 0, 1]]                                 # implausible colours
    return out


def _degrade(img: np.ndarray, d: float, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    out = img
    if d > 0:
        out = gaussian_filter(out, sigma=(2.5 * d, 2.5 * d, 0))
        out = 0.5 + (out - 0.5) * (1 - 0.6 * d)
        out = out + rng.normal(0, 0.12 * d, out.shape)
    return np.clip(out, 0, 1)


def make_synthetic_set(folder: Path, scenes: int = 8, per_scene: int = 6, size: int = 96,
                       seed: int = 0) -> Tuple[Path, Path]:
    """Write ``scenes * per_scene`` rated images; returns ``(labels_csv, image_dir)``."""
    from PIL import Image

    folder = Path(folder)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(scenes):
        base = _scene(rng, size)
        for i in range(per_scene):
            d = float(rng.uniform(0, 1))
            s = float(rng.choice([0.0, 0.5, 1.0]))
            img = _degrade(_break_layout(base, s, rng), d, rng)
            name = f"scene{k}_{i}.png"
            Image.fromarray((img * 255).round().astype(np.uint8)).save(images / name)
            t, r = 5 - 4 * d, 5 - 4 * s
            n = (0.145 * t + 0.769 * r) / 0.914
            rows.append([name, f"{n:.4f}", f"{t:.4f}", f"{r:.4f}", f"scene{k}"])
    labels = folder / "labels.csv"
    with labels.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "MOS_nat", "MOS_tech", "MOS_rat", "scene"])
        w.writerows(rows)
    return labels, images
