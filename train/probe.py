"""Linear probe: initialise each branch's head by ridge regression on frozen features.

With a few hundred rated images, a freshly initialised head trained jointly with the backbone
disturbs the pretrained features before it is any good; fitting the head first in closed form
and then fine-tuning ("LP-FT") keeps them. For each branch:

1. the branch's head input (pooled or multi-level features) is computed for every training image
   that carries the branch's label, with the scoring-time preprocessing;
2. with ``head_norm="standardize"`` the per-feature mean and standard deviation are stored in
   the head's normalisation buffers;
3. ridge regression on the standardised features, its strength chosen by exact leave-one-out
   error over a grid, gives ``w`` and ``b``; the linear head ``Linear(d, h) -> Linear(h, 1)`` is
   set to compute exactly ``w.x + b`` (``W1 = u w^T``, ``W2 = u^T`` for a unit vector ``u``, so
   every hidden unit stays trainable).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .data import Item, TrainingData, loader
from .labels import LABEL_OF_AXIS
from .recipe import RecipeError

ALPHAS = tuple(float(a) for a in np.logspace(-1, 6, 36))


def branch_label(branch: str, objective: str) -> str:
    if objective in ("fs", "joint++"):
        return LABEL_OF_AXIS[branch]
    return LABEL_OF_AXIS["naturalness"]


@torch.no_grad()
def branch_embeddings(task, items: Sequence[Item], data: TrainingData, branch: str,
                      batch_size: int) -> np.ndarray:
    """The head input of ``branch`` for every item (scoring-time preprocessing, eval mode)."""
    model = task.model
    model.eval()
    module = getattr(model, branch)
    out: List[np.ndarray] = []
    for batch in loader(items, data.cache, batch_size, shuffle=False, seed=0):
        out.append(task.head_inputs(batch, branch).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, module.feature_dim))


def ridge_loo(z: np.ndarray, y: np.ndarray, alphas: Sequence[float] = ALPHAS
              ) -> Tuple[np.ndarray, float, float, float]:
    """Ridge regression of ``y`` on (standardised) ``z`` with an intercept; the strength is the
    one with the smallest exact leave-one-out squared error. Returns ``(w, b, alpha, loo_rmse)``.

    Solved in the dual (``n`` images, ``d`` >> ``n`` features): ``K = Z Z^T = U S U^T``.
    """
    n = len(y)
    zc = z - z.mean(0)
    yc = y - y.mean()
    s, u = np.linalg.eigh(zc @ zc.T)
    s = np.clip(s, 0, None)
    uty = u.T @ yc
    best = (np.inf, None)
    for a in alphas:
        shrink = s / (s + a)
        fitted = u @ (shrink * uty)
        lev = (u * u) @ shrink + 1.0 / n            # leverage, the intercept's included
        loo = (yc - fitted) / np.clip(1.0 - lev, 1e-6, None)
        mse = float(np.mean(loo ** 2))
        if mse < best[0]:
            best = (mse, a)
    mse, a = best
    w = zc.T @ (u @ (uty / (s + a)))
    b = float(y.mean() - z.mean(0) @ w)
    return w, b, float(a), float(np.sqrt(mse))


def set_linear_head(branch_module, w: np.ndarray, b: float, seed: int = 0) -> None:
    head = branch_module.head
    lin1, lin2 = head[0], head[-1]
    if not isinstance(head[1], torch.nn.Identity):
        raise RecipeError("the linear probe needs a linear head: set head_activation: none")
    h = lin1.out_features
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(h, generator=g, dtype=torch.float64)
    u = u / u.norm()
    wt = torch.as_tensor(w, dtype=torch.float64)
    with torch.no_grad():
        lin1.weight.copy_((u[:, None] * wt[None, :]).to(lin1.weight.dtype))
        lin1.bias.zero_()
        lin2.weight.copy_(u[None, :].to(lin2.weight.dtype))
        lin2.bias.fill_(float(b))


def linear_probe(task, data: TrainingData, objective: str, batch_size: int,
                 alphas: Sequence[float] = ALPHAS, log: Optional[callable] = print) -> Dict[str, Dict[str, float]]:
    """Fit every branch's normalisation and head on its training labels (see module docstring)."""
    from joint_core.model import Standardize

    if hasattr(task, "attach_feature_store"):
        # frozen backbones' features persist beside the decoded-image cache (reused by later runs)
        task.attach_feature_store(data.cache.folder.parent / "features", data.cache.folder.name)
    report: Dict[str, Dict[str, float]] = {}
    for branch in ("technical", "rationality"):
        label = branch_label(branch, objective)
        items = [it for it in data.items("train")
                 if getattr(it.sample, label) is not None and not np.isnan(getattr(it.sample, label))]
        if len(items) < 3:
            if log:
                log(f"linear probe: {branch}: no training images with {label}; head left as initialised")
            continue
        module = getattr(task.model, branch)
        x = branch_embeddings(task, items, data, branch, batch_size)
        y = np.asarray([getattr(it.sample, label) for it in items], dtype=np.float64)
        mean, std = x.mean(0), x.std(0)
        std = np.where(std > 1e-8, std, 1.0)
        if isinstance(module.head_norm, Standardize):
            module.head_norm.mean.copy_(torch.as_tensor(mean, dtype=module.head_norm.mean.dtype))
            module.head_norm.std.copy_(torch.as_tensor(std, dtype=module.head_norm.std.dtype))
            z = (x - mean) / std
        elif isinstance(module.head_norm, torch.nn.Identity):
            z = x
        else:
            raise RecipeError(f"the linear probe needs head_norm standardize or none for the {branch} branch")
        w, b, alpha, rmse = ridge_loo(z, y, alphas)
        set_linear_head(module, w, b)
        report[branch] = {"n": len(items), "label": label, "alpha": alpha, "loo_rmse": rmse}
        if log:
            log(f"linear probe: {branch} on {len(items)} images ({label}): ridge alpha {alpha:.3g}, "
                f"leave-one-out RMSE {rmse:.3f}")
    return report
