"""train.ranked_default's cross-fitting folds and the folding of a photo logit into the
rationality head (``--photo-signal``), on synthetic scores (the build itself needs the data sets)."""

import numpy as np
import pytest

from train.rankfit import rated_pairs, to_scale
from train.ranked_default import cross_fit_folds, fit_fusion, fold_photo_signal, is_photo, out_of_fold


def _rows():
    rows = []
    for g in range(6):                                   # 6 prompts x 4 images, content groups
        rows += [dict(key=f"agiqa/p{g}_{k}.jpg", dataset="agiqa3k", part="train", kind="orig", group=f"p{g}")
                 for k in range(4)]
    rows += [dict(key=f"raise/{c}{k}.png", dataset="raise", part="train", kind="orig", group=None)
             for k in range(10) for c in "fr"]
    rows += [dict(key=f"raise/r9{k}.png", dataset="raise", part="val", kind="orig", group=None) for k in range(3)]
    rows += [dict(rows[0], key=rows[0]["key"] + "#blur2", kind="blur2", source=rows[0]["key"]),
             dict(rows[30], key=rows[30]["key"] + "#jpeg20", kind="jpeg20", source=rows[30]["key"])]
    return rows


def test_cross_fit_folds_keep_groups_and_copies_together():
    rows = _rows()
    fold = cross_fit_folds(rows, folds=5, seed=0)
    assert (fold[[k for k, r in enumerate(rows) if r["part"] != "train"]] == -1).all()
    for g in range(6):                                   # a prompt's images in one fold
        assert len({fold[k] for k, r in enumerate(rows) if r["group"] == f"p{g}"}) == 1
    assert fold[-2] == fold[0] and fold[-1] == fold[30]  # a copy goes with its source
    train = fold[fold >= 0]
    assert set(train.tolist()) == set(range(5))
    # 26 units (6 groups + 20 single images) dealt round-robin after a seeded shuffle
    assert np.array_equal(fold, cross_fit_folds(rows, folds=5, seed=0))
    assert not np.array_equal(fold, cross_fit_folds(rows, folds=5, seed=1))
    photo = is_photo(rows)
    assert photo[24] == 0 and photo[25] == 1 and photo[0] == 0 and np.isnan(photo[-1])



def test_out_of_fold_scores_come_from_fits_that_never_saw_the_row():
    rows = _rows()
    n = len(rows)
    train = np.array([r["part"] == "train" for r in rows])
    label = np.arange(n, dtype=float)
    pairs = rated_pairs(np.flatnonzero(train), label[train], 10000, 0)

    def fit(keep_pairs, fit_rows):
        # column 0: was the row learnt from; column 1: how many of the kept pairs touch it
        touched = np.bincount(np.concatenate([pairs.i[keep_pairs], pairs.j[keep_pairs]]), minlength=n)
        return np.stack([fit_rows.astype(float), touched.astype(float)], 1)

    full = fit(np.ones(len(pairs), bool), train)
    oof = out_of_fold(rows, pairs, fit, full)
    assert oof.shape == full.shape
    assert (oof[train] == 0).all()                       # neither the row nor any pair with it was seen
    assert np.array_equal(oof[~train], full[~train])     # the other rows keep the full fit's scores
    assert (full[train, 0] == 1).all() and (full[train, 1] > 0).all()   # ... which did see the training rows


def _scores(seed, n=400):
    rng = np.random.default_rng(seed)
    t, r, s = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    y = 3 + 0.3 * t + 0.8 * r + 0.5 * s + 0.3 * rng.normal(size=n)
    ds = np.array(["a"] * (n // 2) + ["b"] * (n - n // 2))
    train = np.arange(n) < 300
    idx = np.flatnonzero(train)
    pairs = rated_pairs(idx, y[idx], 20000, seed)
    fit_cols = np.stack([t, r + 0.2 * rng.normal(size=n), s + 0.2 * rng.normal(size=n)], 1)   # "out of fold"
    return t, r, s, y, ds, train, pairs, fit_cols


@pytest.mark.parametrize("seed", [0, 1])
def test_folded_head_ranks_like_the_three_input_fusion(seed):
    t, r, s, y, ds, train, pairs, fit_cols = _scores(seed)
    rated = np.where(train, y, np.nan)
    k, alpha, gamma, w_t, w_r, bias = fold_photo_signal(t, r, s, fit_cols, pairs, np.flatnonzero(train),
                                                         rated, rated, ds)
    m, sd, wf = fit_fusion(fit_cols, pairs, np.flatnonzero(train))
    fused = ((np.stack([t, r, s], 1) - m) / sd) @ wf           # the 3-input fusion on the full heads
    rationality = alpha * (r + k * s) + gamma                 # what the folded head outputs
    n = w_t * t + w_r * rationality + bias
    # the same score up to a positive affine map: same order, same correlations
    a, c = np.polyfit(fused, n, 1)
    assert a > 0 and np.abs(a * fused + c - n).max() < 1e-9
    assert k == pytest.approx((wf[2] / sd[2]) / (wf[1] / sd[1]))
    assert 0.3 < k < 1.2                                      # the photo logit's true weight ratio is 0.625
    # both outputs sit on the ratings' scale, fitted on the training rows only
    assert to_scale(rationality, rated, ds) == pytest.approx((1.0, 0.0), abs=1e-9)
    assert to_scale(n, rated, ds) == pytest.approx((1.0, 0.0), abs=1e-9)
    # validation and test rows do not move the fit
    y2 = y.copy()
    y2[~train] = -y2[~train]
    assert fold_photo_signal(t, r, s, fit_cols, pairs, np.flatnonzero(train), np.where(train, y2, np.nan),
                             np.where(train, y2, np.nan), ds) == pytest.approx((k, alpha, gamma, w_t, w_r, bias))


def test_folding_refuses_a_rationality_score_the_fusion_weighs_negatively():
    t, r, s, y, ds, train, pairs, fit_cols = _scores(0)
    fit_cols[:, 1] = -fit_cols[:, 1]
    with pytest.raises(ValueError, match="rationality score a weight"):
        fold_photo_signal(t, -r, s, fit_cols, pairs, np.flatnonzero(train), np.where(train, y, np.nan),
                          np.where(train, y, np.nan), ds)
