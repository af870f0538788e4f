"""train.losses against slow references (scipy / numpy) and hand-computed objectives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from train.losses import (
    LossConfig,
    consistency_loss,
    hard_rank,
    joint_objective,
    pearson,
    plcc_loss,
    soft_rank,
    srcc_loss,
    wasserstein_1d,
    wsd_loss,
)

stats = pytest.importorskip("scipy.stats")


def spaced(rng, n):
    """Random values without near-ties (gaps >= 0.5), so tiny-tau soft ranks are exact."""
    return rng.permutation(n).astype(np.float64) + rng.uniform(0, 0.5, n)


def t64(x):
    return torch.tensor(x, dtype=torch.float64)


def test_soft_rank_tends_to_hard_ranks_with_ties():
    rng = np.random.default_rng(0)
    x = np.round(rng.normal(size=40), 1)    # many ties
    ref = stats.rankdata(x)
    np.testing.assert_array_equal(hard_rank(t64(x)).numpy(), ref)
    errs = [np.abs(soft_rank(t64(x), tau).numpy() - ref).max() for tau in (1.0, 0.1, 1e-2, 1e-4)]
    assert errs[-1] < 1e-6 and all(a > b for a, b in zip(errs, errs[1:])), errs
    r = soft_rank(t64(x), 0.5).numpy()
    assert abs(r.sum() - 40 * 41 / 2) < 1e-9        # ranks always sum to N(N+1)/2


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_soft_srcc_matches_spearman(seed):
    rng = np.random.default_rng(seed)
    n = 64
    target = rng.normal(size=n)
    pred = target + rng.normal(scale=1.0, size=n)
    ref = stats.spearmanr(pred, target)[0]
    # continuous random data: the error shrinks as tau shrinks
    errs = [abs(1 - float(srcc_loss(t64(pred), t64(target), tau)) - ref) for tau in (1.0, 0.1, 0.01, 1e-3)]
    assert errs[-1] < 1e-3 and errs[0] > errs[-1], errs
    # well-separated values: exact at tau = 1e-3
    p2, t2 = spaced(rng, n), spaced(rng, n)
    assert abs(1 - float(srcc_loss(t64(p2), t64(t2), 1e-3)) - stats.spearmanr(p2, t2)[0]) < 1e-3


def test_pearson_and_plcc_loss_match_numpy():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=30), rng.normal(size=30)
    ref = np.corrcoef(a, b)[0, 1]
    assert abs(float(pearson(t64(a), t64(b))) - ref) < 1e-6
    assert abs(float(plcc_loss(t64(a), t64(b))) - (1 - ref)) < 1e-6
    # a constant input: correlation 0 and finite gradients
    x = torch.ones(5, dtype=torch.float64, requires_grad=True)
    v = pearson(x, t64(a[:5]))
    v.backward()
    assert v.item() == 0.0 and torch.isfinite(x.grad).all()


def test_rank_losses_have_useful_gradients():
    rng = np.random.default_rng(5)
    target = t64(rng.normal(size=16))
    pred = t64(rng.normal(size=16)).requires_grad_(True)
    for fn in (lambda p: srcc_loss(p, target), lambda p: plcc_loss(p, target),
               lambda p: consistency_loss(p, target, alpha=1.0, plcc_weight=0.5)):
        pred.grad = None
        fn(pred).backward()
        g = pred.grad
        assert torch.isfinite(g).all() and g.abs().sum() > 0
    # a gradient step on the SRCC loss improves the rank agreement
    pred.grad = None
    loss0 = srcc_loss(pred, target, tau=0.5)
    loss0.backward()
    with torch.no_grad():
        stepped = pred - 5.0 * pred.grad
    assert srcc_loss(stepped, target, tau=0.5).item() < loss0.item()


def test_consistency_loss_composition_and_small_batches():
    rng = np.random.default_rng(6)
    target, pred = spaced(rng, 20), spaced(rng, 20)
    mse = np.mean((pred - target) ** 2)
    srcc = stats.spearmanr(pred, target)[0]
    plcc = stats.pearsonr(pred, target)[0]
    got = float(consistency_loss(t64(pred), t64(target), alpha=0.7, plcc_weight=0.3, tau=1e-3))
    assert abs(got - (mse + 0.7 * (1 - srcc) + 0.3 * (1 - plcc))) < 1e-6
    # [N, 1] predictions do not broadcast against [N] targets
    got2 = float(consistency_loss(t64(pred)[:, None], t64(target), alpha=0.0))
    assert abs(got2 - mse) < 1e-9
    with pytest.raises(ValueError, match="20 values but target has 19"):
        consistency_loss(t64(pred), t64(target[:19]))
    # N = 1: only the MSE, and backward works
    p = torch.tensor([2.0], requires_grad=True)
    loss = consistency_loss(p, torch.tensor([3.5]), alpha=1.0, plcc_weight=1.0)
    loss.backward()
    assert abs(loss.item() - 2.25) < 1e-6 and float(p.grad) == pytest.approx(-3.0)
    assert srcc_loss(p, torch.tensor([1.0])).item() == 0.0


def test_low_precision_inputs_computed_in_float32():
    x = torch.linspace(1, 5, 33).to(torch.bfloat16)
    y = torch.linspace(1, 5, 33)
    assert consistency_loss(x, y).dtype == torch.float32
    assert float(srcc_loss(x, y, tau=1e-3)) < 1e-4     # bf16 keeps the order of these values


@pytest.mark.parametrize("shape", [(3, 50), (2, 4, 5, 6), (4,)])
def test_wasserstein_p1_matches_scipy(shape):
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=shape), rng.gamma(2.0, size=shape)
    flat_a, flat_b = a.reshape(shape[0], -1), b.reshape(shape[0], -1)
    ref = np.mean([stats.wasserstein_distance(u, v) for u, v in zip(flat_a, flat_b)])
    assert abs(float(wasserstein_1d(t64(a), t64(b), p=1)) - ref) < 1e-9


@pytest.mark.parametrize("p", [2, 3])
def test_wasserstein_p_matches_sorted_quantile_formula(p):
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(5, 8, 7)), rng.normal(1.0, 2.0, size=(5, 8, 7))
    fa, fb = np.sort(a.reshape(5, -1), axis=1), np.sort(b.reshape(5, -1), axis=1)
    ref = np.mean(np.mean(np.abs(fa - fb) ** p, axis=1) ** (1 / p))
    assert abs(float(wasserstein_1d(t64(a), t64(b), p=p)) - ref) < 1e-9


def test_wasserstein_gradients_and_errors():
    rng = np.random.default_rng(9)
    a = t64(rng.normal(size=(2, 3, 4))).requires_grad_(True)
    b = t64(rng.normal(size=(2, 3, 4)))
    wasserstein_1d(a, b).backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    # identical distributions (a permutation of the same values): distance 0, finite zero gradient
    c = b.clone().requires_grad_(True)
    w = wasserstein_1d(c, b.flip(-1))
    w.backward()
    assert w.item() == 0.0 and torch.isfinite(c.grad).all() and float(c.grad.abs().sum()) == 0.0
    with pytest.raises(ValueError, match="equal shapes"):
        wasserstein_1d(a, b[:, :2])
    with pytest.raises(ValueError, match="p must be"):
        wasserstein_1d(a, b, p=0)


def test_wsd_loss_sums_pooled_and_stages():
    rng = np.random.default_rng(10)
    shapes = [(2, 4, 8, 8), (2, 8, 4, 4), (2, 16, 2, 2)]
    si = [t64(rng.normal(size=s)) for s in shapes]
    sl = [t64(rng.normal(0.5, 1.5, size=s)) for s in shapes]
    pi, pl = t64(rng.normal(size=(2, 16))), t64(rng.normal(size=(2, 16)))
    ref = 0.0
    for x, y in [(pi, pl)] + list(zip(si, sl)):
        fx, fy = np.sort(x.numpy().reshape(2, -1), 1), np.sort(y.numpy().reshape(2, -1), 1)
        ref += np.mean(np.sqrt(np.mean((fx - fy) ** 2, axis=1)))
    assert abs(float(wsd_loss(pi, pl, si, sl, p=2)) - ref) < 1e-9
    assert float(wsd_loss(pi, pl, [], [])) == pytest.approx(float(wasserstein_1d(pi, pl)))
    with pytest.raises(ValueError, match="3 image stages but 2"):
        wsd_loss(pi, pl, si, sl[:2])


# ------------------------------------------------------------------------------------ objectives


def batch():
    t = torch.tensor([1.0, 2.0, 3.5, 4.0])
    r = torch.tensor([2.0, 1.5, 3.0, 5.0])
    mos = torch.tensor([1.5, 2.0, 3.0, 4.5])
    mos_t = torch.tensor([1.0, 3.0, 3.0, 4.0])
    mos_r = torch.tensor([2.5, 1.0, 3.5, 4.5])
    return t, r, mos, mos_t, mos_r


def test_objective_is_hand_computed():
    t, r, mos, mos_t, mos_r = batch()
    cfg = LossConfig(objective="is", alpha=0.0, beta=0.5)
    loss, parts = joint_objective(t, r, mos, None, None, torch.tensor(0.8), cfg)
    # MSE(t, mos) = (0.25 + 0 + 0.25 + 0.25) / 4; MSE(r, mos) = (0.25 + 0.25 + 0 + 0.25) / 4
    assert float(loss) == pytest.approx(0.1875 + 0.1875 + 0.5 * 0.8)
    assert parts["is_t"] == pytest.approx(0.1875) and parts["wsd"] == pytest.approx(0.8)
    assert parts["loss"] == pytest.approx(float(loss)) and "fs" not in parts
    # the WSD term only when wanted and given
    off, p_off = joint_objective(t, r, mos, None, None, torch.tensor(0.8), LossConfig(alpha=0.0, use_wsd=False))
    none, p_none = joint_objective(t, r, mos, None, None, None, LossConfig(alpha=0.0))
    assert float(off) == float(none) == pytest.approx(0.375) and "wsd" not in p_off and "wsd" not in p_none


def test_objective_rank_term_hand_computed():
    t, r, mos, mos_t, mos_r = batch()
    cfg = LossConfig(objective="is", alpha=2.0, tau=1e-4, use_wsd=False)
    loss, parts = joint_objective(t, r, mos, None, None, None, cfg)
    # t has the same order as mos (SRCC 1); r orders samples 0 and 1 the other way round
    srcc_r = stats.spearmanr(r.numpy(), mos.numpy())[0]
    assert srcc_r == pytest.approx(0.8)
    assert parts["is_t_srcc"] == pytest.approx(0.0, abs=1e-6)
    assert parts["is_r_srcc"] == pytest.approx(1 - srcc_r, abs=1e-6)
    assert float(loss) == pytest.approx(0.375 + 2.0 * (1 - srcc_r), abs=1e-5)


def test_objective_fs_and_joint_plus_plus():
    t, r, mos, mos_t, mos_r = batch()
    wsd = torch.tensor(0.3)
    base = dict(alpha=0.0, beta=1.0, lambda_is=0.25)
    fs, p_fs = joint_objective(t, r, mos, mos_t, mos_r, wsd, LossConfig(objective="fs", **base))
    # MSE(t, mos_t) = (0 + 1 + 0.25 + 0) / 4; MSE(r, mos_r) = (0.25 + 0.25 + 0.25 + 0.25) / 4
    assert float(fs) == pytest.approx(0.3125 + 0.25) and "is" not in p_fs and "wsd" not in p_fs
    l_is, _ = joint_objective(t, r, mos, None, None, wsd, LossConfig(objective="is", **base))
    pp, p_pp = joint_objective(t, r, mos, mos_t, mos_r, wsd, LossConfig(objective="joint++", **base))
    assert float(pp) == pytest.approx(float(fs) + 0.25 * float(l_is))
    assert p_pp["fs"] == pytest.approx(float(fs)) and p_pp["is"] == pytest.approx(float(l_is))


def test_objective_gradients_reach_both_branches():
    t, r, mos, mos_t, mos_r = batch()
    t.requires_grad_(True)
    r.requires_grad_(True)
    loss, _ = joint_objective(t, r, mos, mos_t, mos_r, None, LossConfig(objective="joint++"))
    loss.backward()
    for g in (t.grad, r.grad):
        assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_objective_errors():
    t, r, mos, mos_t, mos_r = batch()
    with pytest.raises(ValueError, match="'fs' needs mos_t"):
        joint_objective(t, r, mos, None, mos_r, None, LossConfig(objective="fs"))
    with pytest.raises(ValueError, match="'joint\\+\\+' needs mos_r"):
        joint_objective(t, r, mos, mos_t, None, None, LossConfig(objective="joint++"))
    nan_r = mos_r.clone()
    nan_r[2] = float("nan")
    with pytest.raises(ValueError, match="1 of 4 are NaN"):
        joint_objective(t, r, mos, mos_t, nan_r, None, LossConfig(objective="fs"))
    with pytest.raises(ValueError, match="objective must be one of"):
        LossConfig(objective="joint+")
    with pytest.raises(ValueError, match="alpha"):
        LossConfig(alpha=-1)
    with pytest.raises(ValueError, match="tau"):
        LossConfig(tau=0)


def test_missing_labels_skip_uses_only_labelled_samples():
    from train.losses import LossConfig, consistency_loss, joint_objective

    torch.manual_seed(0)
    t, r = torch.randn(6, requires_grad=True), torch.randn(6, requires_grad=True)
    nan = float("nan")
    mos_t = torch.tensor([1.0, 2.0, 3.0, nan, nan, nan])
    mos_r = torch.tensor([nan, nan, nan, 4.0, 2.0, 5.0])
    cfg = LossConfig(objective="fs", missing_labels="skip")
    loss, parts = joint_objective(t, r, torch.full((6,), nan), mos_t, mos_r, None, cfg)
    expected = consistency_loss(t[:3], mos_t[:3]) + consistency_loss(r[3:], mos_r[3:])
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert torch.all(t.grad[3:] == 0) and torch.all(r.grad[:3] == 0) and t.grad[:3].abs().sum() > 0
    # a label kind absent from the whole batch contributes nothing (and no NaN)
    loss2, _ = joint_objective(t, r, torch.full((6,), nan), mos_t, torch.full((6,), nan), None, cfg)
    torch.testing.assert_close(loss2, consistency_loss(t[:3], mos_t[:3]))
    with pytest.raises(ValueError, match="NaN"):
        joint_objective(t, r, torch.full((6,), nan), mos_t, mos_r, None, LossConfig(objective="fs"))


def test_ranking_hinge_is_zero_only_past_the_margin():
    from train.losses import ranking_hinge

    better = torch.tensor([3.0, 3.0, 3.0], requires_grad=True)
    worse = torch.tensor([2.0, 2.9, 3.5])
    loss = ranking_hinge(better, worse, margin=0.25)
    # per pair: max(0, 0.25 - 1.0) = 0, max(0, 0.25 - 0.1) = 0.15, max(0, 0.25 + 0.5) = 0.75
    assert loss.item() == pytest.approx((0 + 0.15 + 0.75) / 3)
    loss.backward()
    assert better.grad.tolist() == pytest.approx([0.0, -1 / 3, -1 / 3])


def test_degradations_are_seeded_and_really_degrade():
    from scipy.ndimage import gaussian_filter

    from train.degrade import degrade, gaussian_blur

    x = torch.rand(6, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    a = degrade(x, torch.Generator().manual_seed(1))
    b = degrade(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape and 0 <= float(a.min()) and float(a.max()) <= 1
    changed = (a - x).flatten(1).abs().mean(1)
    assert bool((changed > 0.01).all())                     # every image is degraded
    # the blur is a Gaussian filter with a per-image sigma (reference: SciPy; torch "reflect" is SciPy "mirror")
    y = gaussian_blur(x[:2], torch.tensor([1.0, 2.0]))
    for i, s in enumerate((1.0, 2.0)):
        ref = gaussian_filter(x[i].numpy(), sigma=(0, s, s), mode="mirror", truncate=6 / s if s == 1.0 else 3.0)
        np.testing.assert_allclose(y[i].numpy(), ref, atol=2e-3)


def test_fidelity_loss_is_zero_at_the_target_and_bounded():
    import torch

    from train.losses import fidelity_loss

    d = torch.tensor([0.0, 3.0, -3.0, 0.5])
    # p = Phi(d / sqrt(2)): a tie at 0, near-certain at +-3
    assert float(fidelity_loss(d[:1], torch.tensor([0.5]))) == pytest.approx(0.0, abs=1e-6)
    right = float(fidelity_loss(d[1:3], torch.tensor([1.0, 0.0])))
    wrong = float(fidelity_loss(d[1:3], torch.tensor([0.0, 1.0])))
    assert right < 0.02 and 0.85 < wrong <= 1.0
    assert float(fidelity_loss(torch.tensor([40.0]), torch.tensor([0.0]))) <= 1.0   # bounded: one mistake


def test_fidelity_loss_weights_pairs():
    import torch

    from train.losses import fidelity_loss

    d, t = torch.tensor([3.0, 3.0], dtype=torch.float64), torch.tensor([1.0, 0.0], dtype=torch.float64)
    right, wrong = (float(fidelity_loss(d[k:k + 1], t[k:k + 1])) for k in (0, 1))
    # a weighted mean: the wrong pair at weight 3 of 4 counts three times the right one
    assert float(fidelity_loss(d, t, weight=torch.tensor([1.0, 3.0]))) == pytest.approx((right + 3 * wrong) / 4)
    assert float(fidelity_loss(d, t, weight=torch.tensor([2.0, 2.0]))) == pytest.approx(float(fidelity_loss(d, t)))
    assert fidelity_loss(d, t, weight=torch.tensor([1.0, 3.0])).dtype == torch.float64   # float64 kept
    with pytest.raises(ValueError, match="weight has 3 values for 2 pairs"):
        fidelity_loss(d, t, weight=torch.ones(3))


def test_pairwise_linear_fit_orders_within_sets_only():
    """Two sets on different scales: a linear score fitted on within-set pairs orders each set
    (SRCC ~1) although a pooled regression would be pulled by the offset between the sets."""
    import numpy as np

    from train.rankfit import ordered_pairs, PairSet, fit_linear, pair_accuracy, rated_pairs, to_scale

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    truth = x @ np.array([1.0, -2.0, 0.0, 0.5, 0.0])
    y = np.where(np.arange(200) < 100, truth, 50 + 10 * truth)      # set B: another scale
    pairs = PairSet.concat([rated_pairs(np.arange(100), y[:100], 2000, 0),
                            rated_pairs(np.arange(100, 200), y[100:], 2000, 0),
                            ordered_pairs([0], [1])])
    assert len(pairs) == 2 * 2000 + 1 and pairs.weight[:2000].sum() == pytest.approx(1.0)
    w = fit_linear(x, pairs, l2=1e-4)
    s = x @ w
    assert pair_accuracy(s, pairs) > 0.95
    assert np.corrcoef(w, [1.0, -2.0, 0.0, 0.5, 0.0])[0, 1] > 0.99
    a, c = to_scale(s, np.where(np.arange(200) < 100, y, np.nan), ["a"] * 100 + ["b"] * 100)
    assert a > 0 and np.corrcoef(a * s[:100] + c, y[:100])[0, 1] > 0.98


def test_balanced_logistic_classifier_finds_the_direction_and_weighs_classes_equally():
    """train.rankfit.fit_classifier (the photo-vs-generation probe of train.photo_signal): on
    separable-ish data with 9 negatives to every positive it still recovers the true direction,
    and its threshold at 0 balances the two classes' errors instead of calling everything 0."""
    import numpy as np

    from train.rankfit import fit_classifier

    rng = np.random.default_rng(1)
    x = rng.normal(size=(1000, 4))
    truth = np.array([2.0, 0.0, -1.0, 0.0])
    y = (x @ truth + rng.normal(scale=0.5, size=1000) > 2.6).astype(float)   # about 10 % positives
    assert 0.05 < y.mean() < 0.2
    w, b = fit_classifier(x, y, l2=1e-3)
    assert np.corrcoef(w, truth)[0, 1] > 0.98
    pred = x @ w + b > 0
    recall_pos, recall_neg = pred[y == 1].mean(), (~pred[y == 0]).mean()
    assert recall_pos > 0.85 and recall_neg > 0.85                    # balanced, not "always 0"
    w_strong, _ = fit_classifier(x, y, l2=10.0)
    assert np.linalg.norm(w_strong) < 0.2 * np.linalg.norm(w)         # L2 shrinks
    with pytest.raises(ValueError, match="0 and 1"):
        fit_classifier(x, np.zeros(1000), l2=1e-3)
    with pytest.raises(ValueError, match="0 and 1"):
        fit_classifier(x, np.full(1000, 0.5), l2=1e-3)
