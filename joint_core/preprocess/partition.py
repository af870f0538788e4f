"""Artifact-guided patch partition (paper eq. 1-2, Fig. 15), batched and seeded.

The image is cut into a ``grid`` x ``grid`` mosaic. Patches are visited in raster order: a
patch that contains a detected artifact never moves; a clean patch that has not moved yet is
swapped with a clean, not-yet-moved 8-neighbour, chosen at random, and both are marked moved.
Semantics and layout are destroyed, local distortions (and the artifacts, in place) are kept.

Randomness comes from a table of priorities ``[grid*grid, 8]`` (or one per image when training):
the eligible neighbour with the highest priority wins. Scoring uses one table drawn from the
configured seed, so an image gets the same partition alone or anywhere in a batch; the loop runs
over the ``grid*grid`` cells (vectorised over the batch), never over pixels.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional

import torch
from torch import Tensor

_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


@lru_cache(maxsize=16)
def neighbour_table(grid: int) -> Tensor:
    """``[grid*grid, 8]`` indices of each cell's 8-neighbours in raster order, -1 outside."""
    table = torch.full((grid * grid, 8), -1, dtype=torch.long)
    for i in range(grid):
        for j in range(grid):
            for k, (di, dj) in enumerate(_OFFSETS):
                ni, nj = i + di, j + dj
                if 0 <= ni < grid and 0 <= nj < grid:
                    table[i * grid + j, k] = ni * grid + nj
    return table


def partition_priorities(grid: int, seed: Optional[int] = None,
                         generator: Optional[torch.Generator] = None,
                         batch: Optional[int] = None) -> Tensor:
    """Random neighbour priorities: ``[grid*grid, 8]`` (shared) or ``[batch, grid*grid, 8]``.

    Drawn on the CPU so a seed gives the same table on every device.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
    shape = (grid * grid, 8) if batch is None else (batch, grid * grid, 8)
    return torch.rand(shape, generator=generator)


def partition_permutation(artifact_cells: Tensor, priorities: Tensor) -> Tensor:
    """Source patch index for every output cell.

    Args:
        artifact_cells: ``[B, G*G]`` bool, True where a patch contains an artifact.
        priorities: ``[G*G, 8]`` or ``[B, G*G, 8]``.
    Returns:
        ``[B, G*G]`` long: output cell ``c`` shows input patch ``perm[b, c]``.
    """
    b, n = artifact_cells.shape
    grid = int(round(n ** 0.5))
    if grid * grid != n:
        raise ValueError(f"artifact_cells must have grid*grid columns, got {n}")
    device = artifact_cells.device
    table = neighbour_table(grid).to(device)
    pri = priorities.to(device)
    if pri.dim() == 2:
        pri = pri.unsqueeze(0).expand(b, -1, -1)
    moved = artifact_cells.clone().bool()          # artifact patches are pinned
    perm = torch.arange(n, device=device).repeat(b, 1)
    rows = torch.arange(b, device=device)
    valid = table >= 0
    safe = table.clamp_min(0)
    for c in range(n):
        cand = valid[c] & ~moved[:, safe[c]]                       # [B, 8]
        act = ~moved[:, c] & cand.any(1)                            # [B]
        if not bool(act.any()):
            continue
        score = torch.where(cand, pri[:, c], torch.full_like(pri[:, c], -1.0))
        other = safe[c][score.argmax(1)]                            # [B]
        r = rows[act]
        o = other[act]
        perm[r, c] = o
        perm[r, o] = c
        moved[r, c] = True
        moved[r, o] = True
    return perm


def apply_permutation(images: Tensor, perm: Tensor, grid: int) -> Tensor:
    """Rearrange the ``grid`` x ``grid`` patches of ``[B, C, H, W]`` by ``perm`` ``[B, G*G]``."""
    b, c, h, w = images.shape
    if h % grid or w % grid:
        raise ValueError(f"image {h}x{w} is not divisible into a {grid}x{grid} grid")
    ph, pw = h // grid, w // grid
    patches = images.reshape(b, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(b, grid * grid, c, ph, pw)
    idx = perm.view(b, -1, 1, 1, 1).expand(-1, -1, c, ph, pw)
    shuffled = torch.gather(patches, 1, idx)
    shuffled = shuffled.reshape(b, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5)
    return shuffled.reshape(b, c, h, w)


def cells_with_artifacts(mask: Tensor, grid: int) -> Tensor:
    """``[B, H, W]`` artifact mask -> ``[B, grid*grid]`` bool (any artifact pixel in the cell)."""
    if mask.dim() != 3:
        raise ValueError(f"mask must be [B, H, W], got {tuple(mask.shape)}")
    pooled = torch.nn.functional.adaptive_max_pool2d(mask[:, None].float(), grid)
    return (pooled[:, 0] > 0).flatten(1)


def patch_partition(images: Tensor, artifact_cells: Tensor, grid: int,
                    priorities: Tensor) -> Tensor:
    """Partition ``[B, C, H, W]`` images with their ``[B, grid*grid]`` artifact flags."""
    perm = partition_permutation(artifact_cells, priorities)
    return apply_permutation(images, perm, grid)
