"""Linear heads and fusions fitted by learning to rank on frozen features (issue 21).

Rating sets do not share a scale: RAISE rates realness 0-100 over photographs and generations,
AGIQA-3K perceptual quality 0-5 over generations only, CLIVE quality over photographs only.
Regressing onto a common 1-5 scale after a linear map mixes what "3" means in each. Following
UNIQUE and LIQE (Zhang et al., TIP 2021 / CVPR 2023), the fit here only compares images *within*
a data set (or within a group of it: a clean image and its own degraded copies), through the
fidelity loss of :func:`train.losses.fidelity_loss`; no pair ever crosses two rating scales.

A pairwise fit fixes a score's order, not its units. :func:`to_scale` then maps the scores onto
the MOS scale by one least-squares affine map over the rated images (every set weighing the same),
so a fitted head still reads 1-5 like the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from .losses import fidelity_loss


@dataclass
class PairSet:
    """The comparisons one fit learns from, by row index into the feature matrix.

    ``i``, ``j``: the two images of each pair; ``p``: the probability that ``i`` is better (from
    the ratings: 1, 0, 0.5, or a Thurstone probability); ``weight``: each pair's weight (a data
    set's pairs sum to that set's weight, whatever its size).
    """

    i: np.ndarray
    j: np.ndarray
    p: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return len(self.i)

    def subset(self, keep: np.ndarray) -> "PairSet":
        """The pairs where the boolean mask ``keep`` is true."""
        return PairSet(self.i[keep], self.j[keep], self.p[keep], self.weight[keep])

    @staticmethod
    def concat(parts: Sequence["PairSet"]) -> "PairSet":
        parts = [q for q in parts if len(q)]
        if not parts:
            return PairSet(*(np.zeros(0, dtype=t) for t in (np.int64, np.int64, np.float64, np.float64)))
        return PairSet(*(np.concatenate([getattr(q, f) for q in parts]) for f in ("i", "j", "p", "weight")))


def rated_pairs(rows: Sequence[int], y: Sequence[float], max_pairs: int, seed: int, weight: float = 1.0,
                ) -> PairSet:
    """Pairs of rated images of ONE data set, ``max_pairs`` at most (drawn at random, seeded;
    every pair when there are fewer); ``p`` is 1, 0 or 0.5 by the ratings."""
    rows = np.asarray(rows, dtype=np.int64)
    y = np.asarray(y, dtype=np.float64)
    n = len(rows)
    if n < 2:
        return PairSet.concat([])
    rng = np.random.default_rng(seed)
    if n * (n - 1) // 2 <= max_pairs:
        a, b = np.triu_indices(n, 1)
    else:
        a = rng.integers(0, n, max_pairs * 2)
        b = rng.integers(0, n, max_pairs * 2)
        ok = a != b
        a, b = a[ok][:max_pairs], b[ok][:max_pairs]
    d = y[a] - y[b]
    p = np.where(d > 0, 1.0, np.where(d < 0, 0.0, 0.5))
    w = np.full(len(a), weight / max(1, len(a)))
    return PairSet(rows[a], rows[b], p, w)


def ordered_pairs(better: Sequence[int], worse: Sequence[int], weight: float = 1.0) -> PairSet:
    """Known orders without ratings: ``better[k]`` beats ``worse[k]`` (a clean image and its own
    degraded copy; a rated image and a broken frame)."""
    b, w_ = np.asarray(better, dtype=np.int64), np.asarray(worse, dtype=np.int64)
    n = max(1, len(b))
    return PairSet(b, w_, np.ones(len(b)), np.full(len(b), weight / n))


def fit_linear(x: np.ndarray, pairs: PairSet, l2: float, steps: int = 200, init: Optional[np.ndarray] = None,
               ) -> np.ndarray:
    """``w`` minimising ``sum_k weight_k * fidelity(x_i.w - x_j.w, p_k) + l2 * |w|^2`` (L-BFGS,
    float64, deterministic). ``x``: ``[N, d]`` features (standardised by the caller)."""
    X = torch.as_tensor(x, dtype=torch.float64)
    i, j = torch.as_tensor(pairs.i), torch.as_tensor(pairs.j)
    p = torch.as_tensor(pairs.p, dtype=torch.float64)
    wt = torch.as_tensor(pairs.weight, dtype=torch.float64)
    w = torch.zeros(X.shape[1], dtype=torch.float64) if init is None else torch.as_tensor(init, dtype=torch.float64)
    w = w.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        s = X @ w
        loss = fidelity_loss(s[i] - s[j], p, weight=wt, eps=1e-12) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy()


def fit_classifier(x: np.ndarray, y: np.ndarray, l2: float, steps: int = 200) -> Tuple[np.ndarray, float]:
    """``(w, b)`` of an L2-regularised logistic regression of the 0/1 labels ``y`` on ``x`` (rows
    standardised by the caller), the two classes weighing the same whatever their sizes (L-BFGS,
    float64, deterministic). ``x @ w + b`` is the logit of class 1."""
    y = np.asarray(y, dtype=np.float64)
    if not np.isin(y, (0.0, 1.0)).all() or y.min() == y.max():
        raise ValueError("fit_classifier needs labels 0 and 1, both present")
    X = torch.as_tensor(x, dtype=torch.float64)
    t = torch.as_tensor(y)
    pos = float(t.mean())
    weight = torch.where(t > 0.5, 0.5 / pos, 0.5 / (1.0 - pos)) / len(t)
    wb = torch.zeros(X.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([wb], lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logit = X @ wb[:-1] + wb[-1]
        loss = (weight * torch.nn.functional.binary_cross_entropy_with_logits(logit, t, reduction="none")).sum()
        loss = loss + l2 * (wb[:-1] * wb[:-1]).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w = wb.detach().numpy()
    return w[:-1], float(w[-1])


def to_scale(s: np.ndarray, y: np.ndarray, sets: Sequence[str]) -> Tuple[float, float]:
    """``(a, c)`` with ``a * s + c`` closest to the ratings ``y`` (NaN: unrated, ignored) in least
    squares, every data set weighing the same; ``a`` is kept positive (order is the fit's)."""
    s, y = np.asarray(s, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = ~np.isnan(y)
    sets = np.asarray(sets)[ok]
    w = np.sqrt(np.asarray([1.0 / np.sum(sets == d) for d in sets]))
    A = np.stack([s[ok], np.ones(int(ok.sum()))], 1) * w[:, None]
    (a, c), *_ = np.linalg.lstsq(A, y[ok] * w, rcond=None)
    if a <= 0:   # the fit's order disagrees with the ratings overall: keep the order, match the mean
        a = float(np.std(y[ok]) / max(np.std(s[ok]), 1e-12))
        c = float(np.mean(y[ok]) - a * np.mean(s[ok]))
    return float(a), float(c)


def pair_accuracy(s: np.ndarray, pairs: PairSet) -> float:
    """Fraction of the decided pairs (``p`` != 0.5) whose order the scores get right."""
    d = np.asarray(s)[pairs.i] - np.asarray(s)[pairs.j]
    decided = pairs.p != 0.5
    if not decided.any():
        return float("nan")
    return float(np.mean((d[decided] > 0) == (pairs.p[decided] > 0.5)))


def standardize(x: np.ndarray, rows: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and std (std 1 where a feature is constant) over ``rows``."""
    mean, std = x[rows].mean(0), x[rows].std(0)
    return mean, np.where(std > 1e-8, std, 1.0)

