import numpy as np
import pytest
import torch

from joint_core import JointModel, get_preset
from train.data import Item, PerDatasetBatches
from train.datasets import Sample
from train.probe import ridge_loo, set_linear_head


def _brute_force_loo(z, y, alpha):
    errs = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        zk, yk = z[keep], y[keep]
        mu, ym = zk.mean(0), yk.mean()
        w = np.linalg.solve((zk - mu).T @ (zk - mu) + alpha * np.eye(z.shape[1]), (zk - mu).T @ (yk - ym))
        errs.append(y[i] - (ym + (z[i] - mu) @ w))
    return float(np.sqrt(np.mean(np.square(errs))))


def test_ridge_matches_the_primal_solution_and_its_leave_one_out_error():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(30, 50))
    y = z[:, :3] @ np.array([1.0, -2.0, 0.5]) + rng.normal(0, 0.3, 30) + 3.0
    w, b, alpha, rmse = ridge_loo(z, y, alphas=[0.1, 1.0, 10.0, 100.0])
    mu = z.mean(0)
    w_primal = np.linalg.solve((z - mu).T @ (z - mu) + alpha * np.eye(50), (z - mu).T @ (y - y.mean()))
    np.testing.assert_allclose(w, w_primal, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(b, y.mean() - mu @ w_primal, rtol=1e-9)
    assert rmse == pytest.approx(_brute_force_loo(z, y, alpha), rel=1e-6)
    # the chosen strength has the smallest leave-one-out error of the grid
    for a in (0.1, 1.0, 10.0, 100.0):
        assert rmse <= _brute_force_loo(z, y, a) + 1e-9


def test_linear_head_computes_w_x_plus_b():
    cfg = get_preset("tiny-test")
    m = JointModel(cfg).eval()
    d = m.rationality.feature_dim
    w = np.random.default_rng(1).normal(size=d)
    set_linear_head(m.rationality, w, 0.75)
    x = torch.randn(4, d)
    out = m.rationality.head(x).squeeze(-1)
    torch.testing.assert_close(out, torch.from_numpy(x.double().numpy() @ w + 0.75).float(), atol=1e-4, rtol=1e-4)
    cfg.rationality.head_activation = "gelu"
    with pytest.raises(Exception, match="head_activation: none"):
        set_linear_head(JointModel(cfg).rationality, w, 0.0)


def test_per_dataset_batches():
    items = [Item("a", Sample(name=f"a{i}", path="", mos=1.0)) for i in range(10)] + \
            [Item("b", Sample(name=f"b{i}", path="", mos=1.0)) for i in range(7)]
    sampler = PerDatasetBatches(items, batch_size=4, seed=0)
    epoch1 = list(sampler)
    epoch2 = list(sampler)
    for batches in (epoch1, epoch2):
        assert len(batches) == len(sampler) == 5              # a: 4+4+2, b: 4+3
        for b in batches:
            assert len({items[i].dataset for i in b}) == 1    # one data set per batch
        assert sorted(i for b in batches for i in b) == list(range(17))
    assert epoch1 != epoch2                                   # reshuffled every epoch
    assert list(PerDatasetBatches(items, 4, seed=0)) == epoch1  # seeded


def test_per_branch_selection_combines_each_branch_from_its_best_epoch(tmp_path):
    from joint_core import load_model
    from train.selection import Selector
    from train.losses import LossConfig
    from train.tasks import JointTask

    task = JointTask(get_preset("tiny-test"), LossConfig())
    sel = Selector(["naturalness.srcc"], {"technical": ["a/technical.srcc"], "rationality": ["b/rationality.srcc"]})

    def val(t, r):
        return {"a": {"technical": {"srcc": t}}, "b": {"rationality": {"srcc": r}}, }

    states = []
    for epoch, (t, r) in enumerate([(0.5, 0.9), (0.8, 0.2), (0.6, 0.3)]):
        with torch.no_grad():
            for p in task.model.parameters():
                p.add_(1.0)                      # a different model every epoch
        states.append({k: v.clone() for k, v in task.model.state_dict().items()})
        _, changed = sel.update(val(t, r), epoch, task.model)
        assert changed == (epoch in (0, 1))
    assert sel.report() == {"technical": 1, "rationality": 0}
    sel.export(task, tmp_path / "model")
    exported = load_model(tmp_path / "model").state_dict()
    for k, v in exported.items():
        source = states[1] if k.startswith("technical.") else states[0]
        assert torch.equal(v, source[k]), k
    # exporting did not change the model being trained
    assert all(torch.equal(v, states[2][k]) for k, v in task.model.state_dict().items())


def test_frozen_backbone_features_are_computed_once_and_persist(tmp_path):
    """A frozen branch runs its backbone once per image: predictions and the probe reuse the
    features, a second task (another run) reads them from disk, and they equal a fresh pass."""
    from train.data import Batch
    from train.losses import LossConfig
    from train.tasks import JointTask

    rng = np.random.default_rng(0)
    imgs = [torch.from_numpy(rng.integers(0, 255, (3, 64, 72), dtype=np.uint8)) for _ in range(3)]
    batch = Batch(images=imgs, refs=None, mos=torch.zeros(3), mos_t=torch.zeros(3), mos_r=torch.zeros(3),
                  keys=["s/a", "s/b", "s/c"], datasets=["s"] * 3)

    def task():
        torch.manual_seed(0)
        t = JointTask(get_preset("tiny-test"), LossConfig())
        t.parameter_groups(["rationality.backbone"])        # what train.freeze does
        t.model.eval()
        calls = {"technical": 0, "rationality": 0}
        for name in calls:
            branch = getattr(t.model, name)
            branch.backbone.register_forward_hook(lambda *a, n=name: calls.__setitem__(n, calls[n] + 1))
        return t, calls

    first, calls = task()
    first.attach_feature_store(tmp_path / "features", "images-key")
    p1 = first.predict(batch)
    p2 = first.predict(batch)
    assert calls == {"technical": 2, "rationality": 1}       # the trainable branch runs every time
    torch.testing.assert_close(p1["naturalness"], p2["naturalness"])
    second, calls2 = task()
    second.attach_feature_store(tmp_path / "features", "images-key")
    torch.testing.assert_close(second.head_inputs(batch, "rationality"),
                               first.head_inputs(batch, "rationality"))
    assert calls2["rationality"] == 0                         # read from disk
    fresh, calls3 = task()
    fresh.attach_feature_store(tmp_path / "features", "other-images")   # other decoded images: recomputed
    fresh.head_inputs(batch, "rationality")
    assert calls3["rationality"] == 1
    x = fresh.preprocessor.rationality(fresh.preprocessor.prepare(imgs))
    with torch.no_grad():
        torch.testing.assert_close(fresh.model.rationality(x).embedding, second.head_inputs(batch, "rationality"))
