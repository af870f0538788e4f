"""Training objectives of JOINT / JOINT++ (AGIN paper eq. 3-7 and 11-13).

* ``L_C = MSE + alpha * L_SRCC`` (eq. 4, 11-13), with a differentiable Spearman loss built on
  sigmoid soft ranks (no external package);
* ``L_WSD``: the 1-D Wasserstein distance between the feature distributions of an image and of
  its low-frequency map, on the pooled features and on every stage (eq. 3, 9-10);
* ``L_IS`` (JOINT, eq. 5), ``L_FS`` (eq. 6) and ``L_JOINT++ = L_FS + lambda_IS * L_IS`` (eq. 7).

Everything is computed in at least float32, whatever the autocast dtype of the inputs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, Literal, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

OBJECTIVES = ("is", "fs", "joint++")


def _f(x: Tensor) -> Tensor:
    """``x`` in float32 (float64 kept)."""
    return x if x.dtype == torch.float64 else x.float()


def _vector(x: Tensor, argument: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{argument} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 1:
        raise ValueError(f"{argument} must be 1-D [N], got shape {tuple(x.shape)}")
    return _f(x)


def _pair(pred: Tensor, target: Tensor) -> Tuple[Tensor, Tensor]:
    """Flattened ``pred`` and ``target`` (same number of elements; target on pred's device/dtype).

    Flattening both avoids the silent [N, 1] vs [N] broadcast to [N, N].
    """
    if not isinstance(pred, Tensor):
        raise TypeError(f"pred must be a torch.Tensor, got {type(pred).__name__}")
    p = _f(pred).reshape(-1)
    t = torch.as_tensor(target).to(device=p.device, dtype=p.dtype).reshape(-1)
    if p.numel() != t.numel():
        raise ValueError(f"pred has {p.numel()} values but target has {t.numel()} "
                         f"(shapes {tuple(pred.shape)} and {tuple(torch.as_tensor(target).shape)})")
    return p, t


def soft_rank(x: Tensor, tau: float = 0.1) -> Tensor:
    """Differentiable ranks 1..N of a 1-D tensor: ``1 + sum_{j != i} sigmoid((x_i - x_j) / tau)``.

    Tends to the hard ranks (ties averaged) as ``tau -> 0``; ``tau`` is in the units of ``x``.
    O(N^2) memory, fine for batch sizes.
    """
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau!r}")
    x = _vector(x, "x")
    diff = (x[:, None] - x[None, :]) / tau
    return 0.5 + torch.sigmoid(diff).sum(dim=1)   # the j == i term contributes sigmoid(0) = 0.5


def hard_rank(x: Tensor) -> Tensor:
    """Ranks 1..N of a 1-D tensor, ties averaged (like ``scipy.stats.rankdata``); no gradient."""
    x = _vector(x, "x").detach()
    less = (x[None, :] < x[:, None]).sum(dim=1)
    equal = (x[None, :] == x[:, None]).sum(dim=1)
    return (1 + less + 0.5 * (equal - 1)).to(x.dtype)


def pearson(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of two 1-D tensors; 0 (with finite gradients) when one is constant."""
    a, b = _pair(a, b)
    a = a - a.mean()
    b = b - b.mean()
    return (a * b).sum() / (torch.sqrt((a * a).sum() + eps) * torch.sqrt((b * b).sum() + eps))


def _zero(like: Tensor) -> Tensor:
    """A zero that keeps ``like`` in the graph (so .backward() still works)."""
    return _f(like).sum() * 0.0


def srcc_loss(pred: Tensor, target: Tensor, tau: float = 0.1) -> Tensor:
    """``1 - pearson(soft_rank(pred), rank(target))`` (eq. 12); target ranks are hard, ties averaged.

    0 when there are fewer than 2 samples.
    """
    p, t = _pair(pred, target)
    if p.numel() < 2:
        return _zero(p)
    return 1.0 - pearson(soft_rank(p, tau), hard_rank(t))


def plcc_loss(pred: Tensor, target: Tensor) -> Tensor:
    """``1 - pearson(pred, target)``; 0 when there are fewer than 2 samples."""
    p, t = _pair(pred, target)
    if p.numel() < 2:
        return _zero(p)
    return 1.0 - pearson(p, t)


def _consistency_parts(pred: Tensor, target: Tensor, alpha: float, plcc_weight: float,
                       tau: float) -> Tuple[Tensor, Dict[str, Tensor]]:
    p, t = _pair(pred, target)
    parts = {"mse": torch.mean((p - t) ** 2)}
    total = parts["mse"]
    if alpha:
        parts["srcc"] = srcc_loss(p, t, tau)
        total = total + alpha * parts["srcc"]
    if plcc_weight:
        parts["plcc"] = plcc_loss(p, t)
        total = total + plcc_weight * parts["plcc"]
    return total, parts


def consistency_loss(pred: Tensor, target: Tensor, alpha: float = 1.0, plcc_weight: float = 0.0,
                     tau: float = 0.1) -> Tensor:
    """``L_C = MSE + alpha * L_SRCC (+ plcc_weight * L_PLCC)`` (eq. 4 / 13).

    With fewer than 2 samples the rank and correlation terms are 0.
    """
    return _consistency_parts(pred, target, alpha, plcc_weight, tau)[0]


def wasserstein_1d(a: Tensor, b: Tensor, p: int = 2) -> Tensor:
    """Batch mean of the p-Wasserstein distance between per-sample 1-D value distributions.

    ``a`` and ``b`` are ``[B, ...]`` (e.g. the features of an image and of its low-frequency
    map); the flattened values of sample ``i`` form two empirical distributions of equal size, for
    which ``W_p = (mean |sort(a_i) - sort(b_i)|^p)^(1/p)`` (eq. 10). Gradients are finite (zero)
    where the two distributions coincide.
    """
    if not isinstance(p, int) or isinstance(p, bool) or p < 1:
        raise ValueError(f"p must be an integer >= 1, got {p!r}")
    if a.shape != b.shape:
        raise ValueError(f"wasserstein_1d needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dim() < 1 or a.shape[0] == 0 or a[0].numel() == 0:
        raise ValueError(f"wasserstein_1d needs [B, ...] with B >= 1 and values per sample, got {tuple(a.shape)}")
    a = _f(a).reshape(a.shape[0], -1)
    b = _f(b).reshape(b.shape[0], -1).to(a.dtype)
    d = (torch.sort(a, dim=1).values - torch.sort(b, dim=1).values).abs()
    m = (d if p == 1 else d ** p).mean(dim=1)
    if p == 1:
        w = m
    else:
        # m ** (1/p) has an infinite derivative at 0: clamp (zero gradient below) and mask
        tiny = torch.finfo(m.dtype).tiny
        w = torch.where(m > 0, m.clamp_min(tiny) ** (1.0 / p), torch.zeros_like(m))
    return w.mean()


def wsd_loss(pooled_img: Tensor, pooled_lfm: Tensor, stages_img: Sequence[Tensor], stages_lfm: Sequence[Tensor],
             p: int = 2) -> Tensor:
    """``L_WSD = W_p(pooled) + sum_i W_p(stage_i)`` (eq. 3) for an image and its low-frequency map."""
    if len(stages_img) != len(stages_lfm):
        raise ValueError(f"wsd_loss: {len(stages_img)} image stages but {len(stages_lfm)} LFM stages")
    total = wasserstein_1d(pooled_img, pooled_lfm, p)
    for i, (si, sl) in enumerate(zip(stages_img, stages_lfm)):
        if si.shape != sl.shape:
            raise ValueError(f"wsd_loss: stage {i} shapes differ: {tuple(si.shape)} vs {tuple(sl.shape)}")
        total = total + wasserstein_1d(si, sl, p)
    return total


@dataclass
class LossConfig:
    """Which objective and its weights.

    ``objective``: ``"is"`` = L_IS (JOINT, eq. 5), ``"fs"`` = L_FS (eq. 6), ``"joint++"`` =
    L_FS + lambda_is * L_IS (eq. 7). ``alpha`` weighs L_SRCC in L_C, ``beta`` weighs L_WSD,
    ``plcc_weight`` an optional PLCC term in L_C, ``tau`` the soft-rank temperature (MOS units),
    ``wsd_p`` the Wasserstein order (the paper uses 2); ``use_wsd=False`` drops the WSD term.
    ``missing_labels="skip"`` computes each L_C term on the samples that have that label (for
    batches mixing data sets rated on different perspectives); ``"error"`` refuses NaN labels.
    ``distortion_rank`` weighs a ranking prior on the technical branch (:func:`ranking_hinge`
    between each technical-labelled image and a degraded copy, see :mod:`train.degrade`), with
    ``distortion_margin`` in MOS units; 0 (the paper) turns it off.
    """

    objective: Literal["is", "fs", "joint++"] = "is"
    alpha: float = 1.0
    beta: float = 0.5
    lambda_is: float = 0.5
    plcc_weight: float = 0.0
    tau: float = 0.1
    wsd_p: int = 2
    use_wsd: bool = True
    missing_labels: Literal["error", "skip"] = "error"
    distortion_rank: float = 0.0
    distortion_margin: float = 0.25

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"LossConfig.objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        for name in ("alpha", "beta", "lambda_is", "plcc_weight", "distortion_rank", "distortion_margin"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"LossConfig.{name} must be a finite number >= 0, got {v!r}")
        if not (isinstance(self.tau, (int, float)) and self.tau > 0):
            raise ValueError(f"LossConfig.tau must be > 0, got {self.tau!r}")
        if not isinstance(self.wsd_p, int) or isinstance(self.wsd_p, bool) or self.wsd_p < 1:
            raise ValueError(f"LossConfig.wsd_p must be an integer >= 1, got {self.wsd_p!r}")
        if self.missing_labels not in ("error", "skip"):
            raise ValueError(f"LossConfig.missing_labels must be 'error' or 'skip', got {self.missing_labels!r}")

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)


def _labels(x: Optional[Tensor], name: str, objective: str, n: int, allow_nan: bool = False) -> Tensor:
    if x is None:
        raise ValueError(f"objective {objective!r} needs {name} (per-perspective MOS), but {name} is None; "
                         f"use objective 'is' for data sets rated only overall")
    x = torch.as_tensor(x)
    if x.numel() != n:
        raise ValueError(f"{name} has {x.numel()} values for a batch of {n}")
    bad = int(torch.isnan(x.float()).sum())
    if bad and not allow_nan:
        raise ValueError(f"objective {objective!r} needs {name} for every sample, but {bad} of {n} are NaN "
                         f"(the data set lacks these ratings); use objective 'is'")
    return x


def ranking_hinge(better: Tensor, worse: Tensor, margin: float) -> Tensor:
    """Mean hinge ``max(0, margin - (better - worse))``: zero once every ``better`` score
    exceeds its ``worse`` partner by ``margin``."""
    return F.relu(margin - (better.float() - worse.float())).mean()


def joint_objective(t: Tensor, r: Tensor, mos: Tensor, mos_t: Optional[Tensor], mos_r: Optional[Tensor],
                    wsd: Optional[Tensor], cfg: LossConfig) -> Tuple[Tensor, Dict[str, float]]:
    """The training loss for one batch and its float parts for logging.

    ``t``, ``r``: technical / rationality predictions ``[B]``; ``mos``, ``mos_t``, ``mos_r``:
    overall, technical and rationality MOS ``[B]``; ``wsd``: L_WSD of the batch (or None; its mean
    is used if it is not a scalar).

    * ``L_IS = L_C(t, mos) + L_C(r, mos) + beta * wsd`` (wsd term only when ``cfg.use_wsd`` and
      ``wsd`` is not None)
    * ``L_FS = L_C(t, mos_t) + L_C(r, mos_r)`` (ValueError when mos_t / mos_r are missing or NaN)
    * JOINT++: ``L_FS + lambda_is * L_IS``

    Parts: ``loss``; ``is``/``fs`` and their terms ``is_t``, ``is_r``, ``fs_t``, ``fs_r``, each
    split further into ``*_mse``, ``*_srcc`` (and ``*_plcc``); ``wsd`` when used.
    """
    n = t.numel()
    if r.numel() != n:
        raise ValueError(f"t has {n} values but r has {r.numel()}")
    obj = cfg.objective
    logged: Dict[str, Tensor] = {}

    skip = cfg.missing_labels == "skip"

    def lc(pred: Tensor, target: Tensor, key: str) -> Tensor:
        if skip:
            keep = ~torch.isnan(torch.as_tensor(target).to(pred.device).float().reshape(-1))
            if not bool(keep.any()):
                return pred.sum() * 0.0        # no label of this kind in the batch
            pred, target = pred.reshape(-1)[keep], torch.as_tensor(target).to(pred.device).reshape(-1)[keep]
        total, parts = _consistency_parts(pred, target, cfg.alpha, cfg.plcc_weight, cfg.tau)
        logged[key] = total
        logged.update({f"{key}_{k}": v for k, v in parts.items()})
        return total

    loss: Optional[Tensor] = None
    if obj in ("fs", "joint++"):
        mt = _labels(mos_t, "mos_t", obj, n, allow_nan=skip)
        mr = _labels(mos_r, "mos_r", obj, n, allow_nan=skip)
        logged["fs"] = lc(t, mt, "fs_t") + lc(r, mr, "fs_r")
        loss = logged["fs"]
    if obj in ("is", "joint++"):
        m = _labels(mos, "mos", obj, n, allow_nan=skip)
        l_is = lc(t, m, "is_t") + lc(r, m, "is_r")
        if cfg.use_wsd and wsd is not None:
            logged["wsd"] = _f(torch.as_tensor(wsd)).mean()
            l_is = l_is + cfg.beta * logged["wsd"]
        logged["is"] = l_is
        loss = l_is if loss is None else loss + cfg.lambda_is * l_is
    assert loss is not None
    logged["loss"] = loss
    # one device sync for all parts instead of one per part
    values = torch.stack([v.detach().reshape(()).to(torch.float64) for v in logged.values()]).tolist()
    return loss, dict(zip(logged, values))


def fidelity_loss(diff: Tensor, target: Tensor, weight: Optional[Tensor] = None, eps: float = 1e-8) -> Tensor:
    """Mean fidelity loss of pairwise preferences (Tsai et al. 2007; UNIQUE, LIQE).

    ``diff``: ``s_i - s_j`` of the model's scores for each pair ``[P]``; ``target``: the
    probability ``p*`` that ``i`` is better ``[P]`` (1, 0 or 0.5 for a tie; or a soft value).
    The model's probability is ``p = Phi(diff / sqrt(2))`` (Thurstone, unit variance per score),
    and the loss ``1 - sqrt(p* p) - sqrt((1 - p*)(1 - p))`` is 0 when ``p = p*`` and bounded by 1,
    so a pair that cannot be learnt costs no more than one mistake. Only score differences
    matter: pairs taken within one data set never compare two rating scales.
    ``weight`` ``[P]``: a weighted mean instead (each data set's pairs can weigh the same whatever
    their number); ``eps`` keeps the square roots' gradients finite at ``p`` = 0 or 1.
    """
    d, t = _pair(diff, target)
    p = 0.5 * (1.0 + torch.erf(d / 2.0))          # Phi(d / sqrt(2)) = (1 + erf(d / 2)) / 2
    loss = 1.0 - torch.sqrt(t * p + eps) - torch.sqrt((1.0 - t) * (1.0 - p) + eps)
    if weight is None:
        return loss.mean()
    w = torch.as_tensor(weight).to(device=d.device, dtype=d.dtype).reshape(-1)
    if w.numel() != d.numel():
        raise ValueError(f"weight has {w.numel()} values for {d.numel()} pairs")
    return (w * loss).sum() / w.sum()
