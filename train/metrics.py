"""Evaluation metrics of the IQA literature (AGIN paper, appendix C.2): SRCC, KRCC, PLCC (raw and
after the standard 4-parameter logistic mapping), RMSE, bootstrap confidence intervals, and a
Markdown table in the layout of the paper's Tables 3-6.

Inputs may be lists, NumPy arrays or torch tensors. Pairs where either value is NaN or infinite
are dropped. Nothing here raises on degenerate data: fewer than 3 pairs or a constant input give NaN.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from joint_core.model import logistic4
from joint_core.result import AXES
from joint_core.stats import check_level, percentile_interval, resample_indices

from .labels import AXIS_OF_LABEL

_BOOTSTRAP_METRICS = ("srcc", "plcc", "plcc_raw", "krcc", "rmse")
_MIN_N = 3
#: weight of the logistic fit's weak prior on its standardised parameters (see ``_fit``)
FIT_PRIOR = 0.01


def _array(x: Any, argument: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim > 1 and sum(d != 1 for d in a.shape) <= 1:   # [N, 1] / [1, N]
        a = a.reshape(-1)
    if a.ndim != 1:
        raise ValueError(f"{argument} must be 1-D, got shape {a.shape}")
    return a


def _clean(pred: Any, mos: Any) -> Tuple[np.ndarray, np.ndarray, int]:
    """Both inputs as float64 vectors without the pairs where either is not finite, and how many were dropped."""
    p, m = _array(pred, "pred"), _array(mos, "mos")
    if p.shape != m.shape:
        raise ValueError(f"pred has {p.size} values but mos has {m.size}")
    keep = np.isfinite(p) & np.isfinite(m)
    return p[keep], m[keep], int(p.size - keep.sum())


def _degenerate(p: np.ndarray, m: np.ndarray, n_min: int = _MIN_N) -> bool:
    return p.size < n_min or np.ptp(p) == 0 or np.ptp(m) == 0


def _quiet(fn, *args) -> float:
    """``fn(*args).statistic`` with scipy's warnings (constant input, ...) silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fn(*args)
    return float(res.statistic if hasattr(res, "statistic") else res[0])


def srcc(pred: Any, mos: Any) -> float:
    """Spearman rank-order correlation (``scipy.stats.spearmanr``); NaN for < 3 pairs or a constant input."""
    from scipy import stats

    p, m, _ = _clean(pred, mos)
    return math.nan if _degenerate(p, m) else _quiet(stats.spearmanr, p, m)


def krcc(pred: Any, mos: Any) -> float:
    """Kendall rank-order correlation (tau-b, ``scipy.stats.kendalltau``); NaN when degenerate."""
    from scipy import stats

    p, m, _ = _clean(pred, mos)
    return math.nan if _degenerate(p, m) else _quiet(stats.kendalltau, p, m)


def plcc(pred: Any, mos: Any) -> float:
    """Pearson linear correlation of the raw values (``scipy.stats.pearsonr``); NaN when degenerate."""
    from scipy import stats

    p, m, _ = _clean(pred, mos)
    return math.nan if _degenerate(p, m) else _quiet(stats.pearsonr, p, m)


def rmse(pred: Any, mos: Any) -> float:
    """Root mean squared error of the raw values; NaN without pairs."""
    p, m, _ = _clean(pred, mos)
    return math.nan if p.size == 0 else float(np.sqrt(np.mean((p - m) ** 2)))


# --------------------------------------------------------------------------------------------
# logistic mapping
# --------------------------------------------------------------------------------------------


def _logistic(x: np.ndarray, params: Sequence[float]) -> np.ndarray:
    """joint_core's 4-parameter logistic, in float64, on a NumPy array."""
    with np.errstate(all="ignore"):
        return logistic4(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)), params).numpy()


def _linear_params(x: np.ndarray, y: np.ndarray) -> Tuple[float, float, float, float]:
    """A least-squares line ``y = a x + c`` written as a logistic: with a huge ``|b4|`` the logistic
    is linear over the data (``sigmoid(z) = 1/2 + z/4 + O(z^3)``, relative error below 1e-8 here).
    A constant ``x`` gives the constant ``mean(y)``."""
    if y.size == 0:
        return (math.nan,) * 4
    mean_y = float(np.mean(y))
    sx = float(np.std(x)) if x.size else 0.0
    if x.size < 2 or sx == 0:
        return mean_y, mean_y, float(np.mean(x)) if x.size else 0.0, 1.0
    a = float(np.cov(x, y, bias=True)[0, 1] / sx ** 2)
    b3 = float(np.mean(x))
    s = 1e5 * (sx + float(np.ptp(x)))
    mid = mean_y  # the line passes through (mean x, mean y) = the logistic's midpoint (b3, (b1 + b2) / 2)
    return mid + 2 * s * a, mid - 2 * s * a, b3, s


def _sse(x: np.ndarray, y: np.ndarray, params: Sequence[float]) -> float:
    r = _logistic(x, params) - y
    v = float(np.dot(r, r))
    return v if math.isfinite(v) else math.inf


def _fit(x: np.ndarray, y: np.ndarray, extra_p0: Optional[Sequence[float]] = None,
         maxfev: int = 20000) -> Tuple[float, float, float, float]:
    linear = _linear_params(x, y)
    if _degenerate(x, y, n_min=4):
        return linear
    from scipy.optimize import least_squares

    # The solver works on standardised parameters q = (a1, a2, t, v): b1 = mean(y) + std(y) a1,
    # b2 = mean(y) + std(y) a2, b3 = mean(x) + std(x) t, |b4| = std(x) exp(v), with four extra
    # residuals sqrt(FIT_PRIOR) std(y) q, a weak Gaussian prior. Without it the squared error of a
    # few points has flat valleys - a step between two neighbouring predictions (width -> 0, flat
    # in b3 across the gap), a plateau running off to fit one isolated point, a midpoint far
    # outside the data - where the solver stops wherever the last bit of the input sends it:
    # bootstrap resamples of 10 images gave PLCC 0.54 vs 0.36 for the same pairs, and CI saw
    # crosseval's intervals change between two runs of one model. With a hundred pairs or more the
    # prior moves the fitted PLCC by less than 1e-6.
    mx, sx = float(np.mean(x)), float(np.std(x))
    my, sy = float(np.mean(y)), float(np.std(y))
    c = math.sqrt(FIT_PRIOR) * sy

    def params(q: np.ndarray) -> Tuple[float, float, float, float]:
        return (my + sy * float(q[0]), my + sy * float(q[1]), mx + sx * float(q[2]),
                sx * math.exp(min(float(q[3]), 700.0)))

    def residuals(q: np.ndarray) -> np.ndarray:
        return np.concatenate([_logistic(x, params(q)) - y, c * np.asarray(q, dtype=np.float64)])

    def jac(q: np.ndarray) -> np.ndarray:
        b1, b2, b3, b4 = params(q)
        s = _logistic(x, (1.0, 0.0, b3, b4))   # sigmoid((x - b3) / b4)
        with np.errstate(all="ignore"):
            ds = (b1 - b2) * s * (1.0 - s)
            z = (x - b3) / b4
            data = np.stack([sy * s, sy * (1.0 - s), -ds * (sx / b4), -ds * z], axis=1)
        return np.concatenate([data, c * np.eye(4)])

    def to_q(b1: float, b2: float, b3: float, b4: float) -> List[float]:
        return [(b1 - my) / sy, (b2 - my) / sy, (b3 - mx) / sx, math.log(max(abs(b4), 1e-300) / sx)]

    guesses = [to_q(float(np.max(y)), float(np.min(y)), mx, sx),
               to_q(float(np.min(y)), float(np.max(y)), mx, sx)]   # decreasing relation
    if extra_p0 is not None and all(math.isfinite(v) for v in extra_p0):
        guesses = [to_q(*map(float, extra_p0))]   # bootstrap resamples: warm start from the full fit
    best, best_sse = linear, _sse(x, y, linear)
    for q0 in guesses:
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                q = least_squares(residuals, q0, jac=jac, method="lm", max_nfev=maxfev,
                                  ftol=1e-12, xtol=1e-12, gtol=1e-12).x
        except (RuntimeError, ValueError, FloatingPointError, OverflowError, np.linalg.LinAlgError):
            continue
        popt = params(q)
        if not all(math.isfinite(v) for v in popt) or popt[3] == 0:
            continue
        sse = _sse(x, y, popt)
        if sse < best_sse:
            best, best_sse = popt, sse
    return best


def fit_logistic(pred: Any, mos: Any) -> Tuple[float, float, float, float]:
    """Fit ``mos ~ (b1 - b2) * sigmoid((pred - b3) / |b4|) + b2`` (joint_core's ``logistic4``).

    Levenberg-Marquardt (``scipy.optimize.least_squares``, at most 20000 evaluations) from
    ``[max(mos), min(mos), mean(pred), std(pred)]`` and from the mirrored guess for a decreasing
    relation; the fit with the smaller squared error wins. The parameters carry a weak Gaussian
    prior (weight ``FIT_PRIOR`` on ``(b1 - mean(mos)) / std(mos)``, ``(b2 - mean(mos)) / std(mos)``,
    ``(b3 - mean(pred)) / std(pred)`` and ``log(|b4| / std(pred))``, in units of ``std(mos)``): on
    a handful of pairs it keeps the fit off flat valleys where the result would follow the last
    bit of the input; with a hundred pairs or more it changes the fitted PLCC by under 1e-6. Never
    raises: with fewer than 4 pairs, a constant input, a failed fit, or a fit worse than a straight
    line, it returns the least-squares line written in the same parametrisation (a huge ``|b4|``),
    or the constant ``mean(mos)`` for a constant ``pred``; all NaN without pairs.
    """
    p, m, _ = _clean(pred, mos)
    return _fit(p, m)


def _pearson_np(a: np.ndarray, b: np.ndarray) -> float:
    if _degenerate(a, b):
        return math.nan
    a = a - a.mean()
    b = b - b.mean()
    return float(np.dot(a, b) / math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b))))


def plcc_fitted(pred: Any, mos: Any) -> float:
    """PLCC between ``mos`` and ``pred`` after the logistic mapping of :func:`fit_logistic`."""
    p, m, _ = _clean(pred, mos)
    if p.size < _MIN_N:
        return math.nan
    return _pearson_np(_logistic(p, _fit(p, m)), m)


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------


def _point(p: np.ndarray, m: np.ndarray, p0: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    from scipy import stats

    if p.size < _MIN_N:
        return {k: math.nan for k in _BOOTSTRAP_METRICS} | {"logistic": [math.nan] * 4}
    params = _fit(p, m, extra_p0=p0)
    mapped = _logistic(p, params)
    deg = _degenerate(p, m)
    return {
        "srcc": math.nan if deg else _quiet(stats.spearmanr, p, m),
        "plcc": _pearson_np(mapped, m),
        "plcc_raw": _pearson_np(p, m),
        "krcc": math.nan if deg else _quiet(stats.kendalltau, p, m),
        "rmse": float(np.sqrt(np.mean((mapped - m) ** 2))),
        "logistic": list(params),
    }


def evaluate(pred: Any, mos: Any, bootstrap: int = 0, seed: int = 0, ci: float = 0.95) -> Dict[str, Any]:
    """All metrics for one axis.

    Returns ``n`` (pairs used), ``n_dropped`` (pairs with NaN/inf dropped), ``srcc``, ``plcc``
    (after the logistic mapping), ``plcc_raw``, ``krcc``, ``rmse`` (after the mapping) and
    ``logistic`` (the 4 fitted parameters). With ``bootstrap > 0`` also ``<metric>_ci = [lo, hi]``
    for each metric: percentile interval at level ``ci`` over ``bootstrap`` resamples of the pairs
    with replacement (``numpy.random.default_rng(seed)``; each resample refits the logistic), and
    ``bootstrap``/``ci``. Fewer than 3 pairs give NaN metrics, never an exception.
    """
    if int(bootstrap) < 0:
        raise ValueError(f"bootstrap must be >= 0, got {bootstrap!r}")
    try:
        level = check_level(float(ci))
    except ValueError:
        raise ValueError(f"ci must be in (0, 1), got {ci!r}") from None
    p, m, dropped = _clean(pred, mos)
    out: Dict[str, Any] = {"n": int(p.size), "n_dropped": dropped}
    out.update(_point(p, m))
    if bootstrap:
        samples: Dict[str, List[float]] = {k: [] for k in _BOOTSTRAP_METRICS}
        if p.size >= _MIN_N:
            for block in resample_indices(p.size, int(bootstrap), seed):
                for idx in block:
                    res = _point(p[idx], m[idx], p0=out["logistic"])
                    for k in _BOOTSTRAP_METRICS:
                        samples[k].append(res[k])
        for k, v in samples.items():
            out[f"{k}_ci"] = list(percentile_interval(v, level))
        out["bootstrap"] = int(bootstrap)
        out["ci"] = float(ci)
    return out


def evaluate_axes(preds: Dict[str, Any], targets: Dict[str, Any], **kw: Any) -> Dict[str, Dict[str, Any]]:
    """:func:`evaluate` per axis (``technical``, ``rationality``, ``naturalness``, then any others).

    ``targets`` may use the keys of :meth:`RatedDataset.arrays` (``mos_t``, ``mos_r``, ``mos``,
    see :data:`train.labels.AXIS_OF_LABEL`). Axes whose targets are all NaN (the data set does not rate
    them) and axes without a prediction are skipped. ``kw`` goes to :func:`evaluate`.
    """
    named: Dict[str, Any] = {}
    for key, value in targets.items():
        axis = AXIS_OF_LABEL.get(key, key)
        if axis not in named or key == axis:
            named[axis] = value
    order = [a for a in AXES if a in named] + [a for a in named if a not in AXES]
    out: Dict[str, Dict[str, Any]] = {}
    for axis in order:
        if axis not in preds:
            continue
        target = _array(named[axis], f"targets[{axis!r}]")
        if not np.isfinite(target).any():
            continue
        out[axis] = evaluate(preds[axis], target, **kw)
    return out


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, (list, tuple, np.ndarray)):
        v = np.asarray(value, dtype=np.float64).reshape(-1)
        v = v[np.isfinite(v)]
        if v.size == 0:
            return "-"
        if v.size == 1:
            return f"{v[0]:.4f}"
        return f"{v.mean():.4f} ± {v.std(ddof=1):.4f}"
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "-"
    return f"{x:.4f}" if math.isfinite(x) else "-"


def paper_table(rows: Dict[str, Dict[str, Dict[str, Any]]], axes: Sequence[str] = AXES,
                metrics: Sequence[str] = ("srcc", "plcc")) -> str:
    """A Markdown table in the layout of the paper's Tables 3-6.

    ``rows`` maps a method / variant name to ``{axis: {metric: value}}`` (e.g. the output of
    :func:`evaluate_axes`). One row per method in the given order; columns ``<Axis> <METRIC>``
    per axis and metric. Values print with 4 decimals; a list (one value per split) prints as
    ``mean ± std`` (sample std, ddof=1) of its finite values; missing or NaN values print ``-``.
    """
    header = ["Method"] + [f"{a.capitalize()} {m.upper()}" for a in axes for m in metrics]
    lines: List[str] = ["| " + " | ".join(header) + " |",
                        "|:--" + "|--:" * (len(header) - 1) + "|"]
    for method, per_axis in rows.items():
        cells = [str(method).replace("|", "\\|")]
        for a in axes:
            res = (per_axis or {}).get(a) or {}
            cells += [_cell(res.get(m)) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# best-of-N: agreement within groups (e.g. the images generated for one prompt)
# --------------------------------------------------------------------------------------------

_GROUP_METRICS = ("top_pick", "chance", "pairwise", "within_srcc")


def _group_stats(p: np.ndarray, m: np.ndarray) -> Tuple[float, float, float, float]:
    """``(top-pick hit, chance of a random pick, pairwise ordering accuracy, SRCC)`` of one group.

    The top pick is the first image with the highest prediction; it is a hit when its MOS is
    the group's highest (any of several tied best images counts), and chance is the share of
    best images. Pairwise accuracy is over the pairs whose MOS differ, a tie in the prediction
    counting half. SRCC is NaN when either side is constant.
    """
    from scipy import stats

    best = m == m.max()
    hit = float(best[int(np.argmax(p))])
    chance = float(best.mean())
    dm = np.sign(m[:, None] - m[None, :])
    dp = np.sign(p[:, None] - p[None, :])
    mask = np.triu(dm != 0, 1)
    pairs = int(mask.sum())
    pairwise = float(((dm * dp)[mask] > 0).sum() + 0.5 * (dp[mask] == 0).sum()) / pairs if pairs else math.nan
    within = math.nan if _degenerate(p, m, n_min=2) else _quiet(stats.spearmanr, p, m)
    return hit, chance, pairwise, within


def within_groups(pred: Any, mos: Any, groups: Sequence[Any], bootstrap: int = 0, seed: int = 0,
                  ci: float = 0.95) -> Dict[str, Any]:
    """How well ``pred`` picks and orders the images *within* each group, the best-of-N use.

    For every group of at least 2 images (pairs with a NaN or infinite value dropped first):
    ``top_pick``, the share of groups whose highest-predicted image is (one of) the best by MOS;
    ``chance``, the share a random pick would reach (mean of ``#best / N``, about ``1/N``);
    ``top_pick_ratio = top_pick / chance``; ``pairwise``, the mean over groups of the share of
    image pairs (with different MOS) that the prediction orders like the MOS; ``within_srcc``,
    the mean within-group SRCC (groups where it is defined). ``n_groups`` and ``n`` count what
    was used. With ``bootstrap > 0``, ``<metric>_ci`` are percentile intervals over resamples of
    whole groups (``numpy.random.default_rng(seed)``).
    """
    p_all, m_all = _array(pred, "pred"), _array(mos, "mos")
    g_all = np.asarray(list(groups), dtype=object)
    if not (p_all.shape == m_all.shape == g_all.shape):
        raise ValueError(f"pred, mos and groups must have the same length, got {p_all.size}, {m_all.size}, "
                         f"{g_all.size}")
    keep = np.isfinite(p_all) & np.isfinite(m_all)
    p_all, m_all, g_all = p_all[keep], m_all[keep], g_all[keep]
    rows = []
    for g in dict.fromkeys(g_all.tolist()):
        sel = g_all == g
        if sel.sum() >= 2:
            rows.append(_group_stats(p_all[sel], m_all[sel]))
    table = np.asarray(rows, dtype=np.float64).reshape(-1, len(_GROUP_METRICS))

    def summarise(t: np.ndarray) -> Dict[str, float]:
        if t.shape[0] == 0:
            return {k: math.nan for k in _GROUP_METRICS} | {"top_pick_ratio": math.nan}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # an all-NaN column
            out = {k: float(np.nanmean(t[:, i])) for i, k in enumerate(_GROUP_METRICS)}
        out["top_pick_ratio"] = out["top_pick"] / out["chance"] if out["chance"] > 0 else math.nan
        return out

    out: Dict[str, Any] = {"n": int(sum(1 for _ in p_all)), "n_groups": int(table.shape[0])}
    out.update(summarise(table))
    if bootstrap:
        rng = np.random.default_rng(seed)
        keys = list(_GROUP_METRICS) + ["top_pick_ratio"]
        samples = {k: np.full(int(bootstrap), np.nan) for k in keys}
        if table.shape[0]:
            for b in range(int(bootstrap)):
                res = summarise(table[rng.integers(0, table.shape[0], size=table.shape[0])])
                for k in keys:
                    samples[k][b] = res[k]
        lo_q, hi_q = 50 * (1 - float(ci)), 50 * (1 + float(ci))
        for k, v in samples.items():
            v = v[np.isfinite(v)]
            out[f"{k}_ci"] = [float(np.percentile(v, lo_q)), float(np.percentile(v, hi_q))] if v.size \
                else [math.nan, math.nan]
        out["bootstrap"] = int(bootstrap)
        out["ci"] = float(ci)
    return out


def roc_auc(score: Any, positive: Any) -> float:
    """Area under the ROC curve of ``score`` separating ``positive`` (bool) from the rest: the
    probability that a random positive scores higher than a random negative (ties count half).
    NaN when either class is empty."""
    s = _array(score, "score")
    y = np.asarray(positive, dtype=bool).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"score has {s.size} values but positive has {y.size}")
    keep = np.isfinite(s)
    s, y = s[keep], y[keep]
    pos, neg = s[y], s[~y]
    if pos.size == 0 or neg.size == 0:
        return math.nan
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[:pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))
