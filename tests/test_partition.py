import pytest
import torch

from joint_core.preprocess.partition import (apply_permutation, cells_with_artifacts, neighbour_table,
                                             partition_permutation, partition_priorities, patch_partition)


def reference_permutation(artifact, priorities, grid):
    """Slow, literal version of the rule: raster scan, swap an unmoved clean patch with the
    highest-priority unmoved clean 8-neighbour."""
    n = grid * grid
    perm = list(range(n))
    moved = [bool(a) for a in artifact]
    for c in range(n):
        if moved[c]:
            continue
        i, j = divmod(c, grid)
        best, best_p = None, -1.0
        for k, (di, dj) in enumerate(((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))):
            ni, nj = i + di, j + dj
            if 0 <= ni < grid and 0 <= nj < grid:
                o = ni * grid + nj
                if not moved[o] and float(priorities[c][k]) > best_p:
                    best, best_p = o, float(priorities[c][k])
        if best is not None:
            perm[c], perm[best] = best, c
            moved[c] = moved[best] = True
    return perm


@pytest.mark.parametrize("grid", [2, 4, 7, 8])
def test_vectorised_matches_reference(grid):
    g = torch.Generator().manual_seed(grid)
    artifact = torch.rand((6, grid * grid), generator=g) < 0.3
    pri = partition_priorities(grid, generator=g, batch=6)
    perm = partition_permutation(artifact, pri)
    for b in range(6):
        assert perm[b].tolist() == reference_permutation(artifact[b].tolist(), pri[b].tolist(), grid)


def test_permutation_properties():
    grid = 7
    g = torch.Generator().manual_seed(0)
    artifact = torch.rand((16, grid * grid), generator=g) < 0.25
    perm = partition_permutation(artifact, partition_priorities(grid, seed=3))
    table = neighbour_table(grid)
    for b in range(16):
        p = perm[b]
        assert sorted(p.tolist()) == list(range(grid * grid))          # a permutation
        assert torch.equal(p[p], torch.arange(grid * grid))           # made of swaps
        for c in range(grid * grid):
            if artifact[b, c]:
                assert p[c] == c                                       # artifacts stay in place
            elif p[c] != c:
                assert int(p[c]) in table[c].tolist()                  # swapped with a neighbour
                assert not artifact[b, p[c]]                           # ... that is clean
    # with no artifacts almost every patch moves
    free = partition_permutation(torch.zeros((1, 49), dtype=torch.bool), partition_priorities(7, seed=0))
    assert (free[0] != torch.arange(49)).float().mean() > 0.8


def test_seeded_and_batch_invariant():
    grid = 8
    g = torch.Generator().manual_seed(5)
    artifact = torch.rand((8, grid * grid), generator=g) < 0.2
    pri = partition_priorities(grid, seed=0)
    together = partition_permutation(artifact, pri)
    for b in range(8):
        alone = partition_permutation(artifact[b:b + 1], pri)
        assert torch.equal(alone[0], together[b])
    assert torch.equal(pri, partition_priorities(grid, seed=0))
    assert not torch.equal(pri, partition_priorities(grid, seed=1))


def test_apply_permutation_moves_whole_patches():
    grid, p = 4, 3
    # each patch filled with its own index
    img = torch.arange(grid * grid, dtype=torch.float32).view(1, 1, grid, grid)
    img = img.repeat_interleave(p, 2).repeat_interleave(p, 3).repeat(1, 3, 1, 1)
    perm = partition_permutation(torch.zeros((1, grid * grid), dtype=torch.bool),
                                 partition_priorities(grid, seed=0))
    out = apply_permutation(img, perm, grid)
    for c in range(grid * grid):
        i, j = divmod(c, grid)
        patch = out[0, :, i * p:(i + 1) * p, j * p:(j + 1) * p]
        assert torch.all(patch == perm[0, c])
    assert torch.equal(out.sort().values.flatten().sort().values, img.flatten().sort().values)


def test_cells_with_artifacts_pools_any_pixel():
    mask = torch.zeros((1, 64, 64), dtype=torch.bool)
    mask[0, 0, 0] = True          # cell (0, 0)
    mask[0, 40, 63] = True        # cell (5, 7) of an 8x8 grid
    cells = cells_with_artifacts(mask, 8)[0]
    assert cells.sum() == 2 and cells[0] and cells[5 * 8 + 7]


def test_artifact_patches_keep_their_pixels():
    grid = 4
    x = torch.rand((1, 3, 32, 32))
    artifact = torch.zeros((1, 16), dtype=torch.bool)
    artifact[0, [0, 5, 10]] = True
    out = patch_partition(x, artifact, grid, partition_priorities(grid, seed=0))
    for c in (0, 5, 10):
        i, j = divmod(c, grid)
        sl = (..., slice(i * 8, i * 8 + 8), slice(j * 8, j * 8 + 8))
        assert torch.equal(out[sl], x[sl])
    assert not torch.equal(out, x)


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="grid"):
        partition_permutation(torch.zeros((1, 10), dtype=torch.bool), torch.rand(10, 8))
    with pytest.raises(ValueError, match="not divisible"):
        apply_permutation(torch.rand(1, 3, 10, 10), torch.arange(9)[None], 3)
