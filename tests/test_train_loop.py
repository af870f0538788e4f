"""End-to-end training on a synthetic rated set with the tiny model (CPU, about a minute)."""

import csv
import json

import numpy as np
import pytest
import torch

from joint_core import NaturalnessScorer
from train import experiments
from train.__main__ import main as train_main
from train.loop import run
from train.recipe import RecipeError, load_recipe, recipe_from_dict
from train.synthetic import GROUP_RULE, make_synthetic_set


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    labels, images = make_synthetic_set(root / "data", scenes=8, per_scene=6, size=64, seed=0)
    return root, labels, images


def _recipe(labels, images, **train):
    t = {"epochs": 4, "batch_size": 8, "lr": 1e-3, "select": ["naturalness.srcc"], "bootstrap": 50,
         "device": "cpu", "eval_batch_size": 16}
    t.update(train)
    return recipe_from_dict({
        "name": "synthetic",
        "model": {"preset": "tiny-test", "init": {"technical": "none", "rationality": "none"}},
        "data": [{"name": "synth", "kind": "agin",
                  "args": {"labels": str(labels), "image_dir": str(images), "group_rule": GROUP_RULE},
                  "rescale": None, "split": {"kind": "random", "ratios": [0.6, 0.2, 0.2], "n_splits": 2}}],
        "train": t,
        "loss": {"objective": "joint++", "beta": 0.1},
    })


@pytest.fixture(scope="module")
def fitted(synthetic):
    root, labels, images = synthetic
    recipe = _recipe(labels, images, epochs=5)
    torch.manual_seed(0)
    res = run(recipe, root / "run", cache_root=root / "cache", progress=False)
    return recipe, res, root


def test_training_learns(fitted):
    _, res, _ = fitted
    losses = [h["train_loss"] for h in res.history]
    assert len(losses) == 5 and losses[-1] < 0.5 * losses[0]
    # the synthetic ratings are learnable: validation naturalness SRCC well above chance
    best = max(h["val_select"] for h in res.history)
    assert best > 0.5, res.history
    assert set(res.test["synth"]) == {"technical", "rationality", "naturalness"}
    assert res.test["synth"]["naturalness"]["srcc"] > 0.3


def test_outputs_are_complete(fitted):
    _, res, root = fitted
    out = res.out_dir
    for name in ("recipe.yaml", "splits/synth.json", "model/config.json", "model/model.safetensors",
                 "metrics.json", "predictions.csv", "results.md", "curves.png", "scatter.png",
                 "last/state.pt"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_epoch"] == res.best_epoch
    sizes = metrics["splits"]["synth"]
    assert sum(sizes.values()) == 48 and sizes["train"] > sizes["test"] > 0 and sizes["val"] > 0
    ci = metrics["test"]["synth"]["naturalness"]["srcc_ci"]
    assert ci[0] <= metrics["test"]["synth"]["naturalness"]["srcc"] <= ci[1]
    table = (out / "results.md").read_text()
    m = metrics["test"]["synth"]["naturalness"]
    assert f"naturalness: SRCC {m['srcc']:.4f} [{m['srcc_ci'][0]:.3f}, {m['srcc_ci'][1]:.3f}]" in table


def test_checkpoint_reproduces_logged_test_predictions(fitted, synthetic):
    """predictions.csv comes from NaturalnessScorer on the image files; the training loop's own
    prediction path (cached images, the task's model with the best weights) must agree with it."""
    from train.data import prepare_data
    from train.loop import predict_items
    from train.tasks import build_task

    recipe, res, root = fitted
    _, _, images = synthetic
    rows = list(csv.DictReader((res.out_dir / "predictions.csv").open()))
    scorer = NaturalnessScorer.from_pretrained(res.out_dir / "model", device="cpu")
    scored = scorer.score([str(images / r["name"]) for r in rows])
    data = prepare_data(recipe, 0, cache_root=root / "cache", progress=False)
    items = data.items("test")
    assert [it.sample.name for it in items] == [r["name"] for r in rows]
    task = build_task(recipe)
    task.load_exported(res.out_dir / "model")
    in_loop = predict_items(task, items, data, batch_size=5)
    for axis in ("technical", "rationality", "naturalness"):
        logged = np.array([float(r[axis]) for r in rows])
        np.testing.assert_allclose(getattr(scored, axis).numpy(), logged, atol=1e-5, rtol=0)
        np.testing.assert_allclose(in_loop[axis], logged, atol=1e-4, rtol=0)
    assert np.std(in_loop["naturalness"]) > 1e-3  # not a constant prediction


def test_splits_are_content_disjoint(fitted):
    _, res, _ = fitted
    split = json.loads((res.out_dir / "splits" / "synth.json").read_text())
    groups = {part: {n.split("_")[0] for n in split[part]} for part in ("train", "val", "test")}
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])
    assert not (groups["val"] & groups["test"])


def test_resume_continues_from_the_last_epoch(synthetic):
    root, labels, images = synthetic
    out = root / "resume"
    run(_recipe(labels, images, epochs=1), out, cache_root=root / "cache", progress=False)
    res = run(_recipe(labels, images, epochs=2), out, cache_root=root / "cache", progress=False, resume=True)
    assert [h["epoch"] for h in res.history] == [1, 2]


def test_resumed_run_matches_an_uninterrupted_one(synthetic, monkeypatch):
    """Batch order and augmentation continue where the interrupted run stopped."""
    import train.loop as loop
    from safetensors.torch import load_file

    root, labels, images = synthetic
    recipe = _recipe(labels, images, epochs=3)
    straight = run(recipe, root / "straight", cache_root=root / "cache", progress=False)

    saved = loop.save_state

    def crash_after_first_epoch(*a, **kw):
        saved(*a, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_state", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        run(recipe, root / "interrupted", cache_root=root / "cache", progress=False)
    monkeypatch.setattr(loop, "save_state", saved)
    resumed = run(recipe, root / "interrupted", cache_root=root / "cache", progress=False, resume=True)

    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for a, b in zip(straight.history, resumed.history):
        assert a["train_loss"] == b["train_loss"] and a["val_select"] == b["val_select"]
    w1 = load_file(str(root / "straight" / "last" / "weights.safetensors"))
    w2 = load_file(str(root / "interrupted" / "last" / "weights.safetensors"))
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)


def test_a_damaged_resume_state_is_refused_not_trained_on(synthetic):
    """The resume state's weights go through the same checksum as every weights file."""
    from joint_core import CheckpointError

    root, labels, images = synthetic
    out = root / "damaged-resume"
    run(_recipe(labels, images, epochs=1), out, cache_root=root / "cache", progress=False)
    weights = out / "last" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="do not match the checksum"):
        run(_recipe(labels, images, epochs=2), out, cache_root=root / "cache", progress=False, resume=True)


def test_cv_ablate_baselines(synthetic):
    root, labels, images = synthetic
    recipe = _recipe(labels, images, epochs=1, bootstrap=0)
    summary = experiments.cv(recipe, root / "cv", cache_root=root / "cache", progress=False)
    assert summary["splits"] == [0, 1]
    assert len(summary["test"]["synth"]["naturalness"]["srcc"]) == 2
    assert "±" in (root / "cv" / "cv.md").read_text()

    results = experiments.ablate(recipe, root / "ablate", variants=["joint", "S_T only"],
                                 cache_root=root / "cache", progress=False)
    # S_T only: the base checkpoint re-scored with N = T (not retrained)
    st = results["S_T only"]["synth"]
    assert st["technical"]["srcc"] == pytest.approx(results["joint"]["synth"]["technical"]["srcc"], abs=1e-9)
    rows = list(csv.DictReader((root / "ablate" / "s_t-only" / "predictions.csv").open()))
    assert all(r["naturalness"] == r["technical"] for r in rows)
    base_rows = list(csv.DictReader((root / "ablate" / "joint" / "predictions.csv").open()))
    assert [r["technical"] for r in rows] == [r["technical"] for r in base_rows]
    cfg = json.loads((root / "ablate" / "s_t-only" / "model" / "config.json").read_text())
    assert cfg["fusion"]["rationality_weight"] == 0.0
    # paper Table 5: each fused predictor against every perspective's MOS
    from scipy.stats import spearmanr

    def col(rs, k):
        return np.array([float(r[k]) for r in rs])

    assert st["rationality"]["srcc"] == pytest.approx(
        spearmanr(col(base_rows, "technical"), col(base_rows, "mos_r"))[0], abs=1e-9)
    weighted = results[experiments.WEIGHTED]["synth"]
    assert weighted["technical"]["srcc"] == pytest.approx(
        spearmanr(col(base_rows, "naturalness"), col(base_rows, "mos_t"))[0], abs=1e-9)
    assert weighted["naturalness"]["srcc"] == pytest.approx(results["joint"]["synth"]["naturalness"]["srcc"])
    md = (root / "ablate" / "ablation.md").read_text()
    table5 = md.split("paper Table 5")[1]
    assert "S_T only" in table5 and experiments.WEIGHTED in table5 and "| joint |" not in table5

    base = experiments.baselines(recipe, root / "baselines", backbones=["test_resnet"], init="none",
                                 cache_root=root / "cache", progress=False)
    assert set(base["NR-test_resnet"]["synth"]) == {"technical", "rationality", "naturalness"}
    assert "NR-test_resnet" in (root / "baselines" / "baselines.md").read_text()
    # a baseline export is a hash-checked weights file like every other
    from safetensors import safe_open

    exported = next((root / "baselines").rglob("regressor.json")).parent / "model.safetensors"
    with safe_open(str(exported), framework="pt") as f:
        assert "joint_sha256" in (f.metadata() or {})


def test_cli_and_recipe_errors(synthetic, tmp_path, capsys):
    import yaml

    root, labels, images = synthetic
    recipe = _recipe(labels, images).to_dict()
    recipe["data"][0]["args"]["labels"] = "${LABELS}"
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    code = train_main(["fit", "--config", str(path), "--var", f"LABELS={labels}", "--set", "train.epochs=1",
                       "--set", "train.bootstrap=0", "--out", str(tmp_path / "cli"), "--cache", str(root / "cache"),
                       "--no-progress"])
    assert code == 0 and (tmp_path / "cli" / "model" / "config.json").is_file()
    assert train_main(["fit", "--config", str(path), "--out", str(tmp_path / "x")]) == 2
    assert "${LABELS}" in capsys.readouterr().err
    bad = dict(recipe, trian={})
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(RecipeError, match=r"unknown key\(s\) \['trian'\]"):
        load_recipe(str(tmp_path / "bad.yaml"), variables={"LABELS": str(labels)})
    with pytest.raises(RecipeError, match="bundled recipes"):
        load_recipe("no-such-recipe")
    with pytest.raises(RecipeError, match="train.epochs is a value"):
        load_recipe(str(path), variables={"LABELS": str(labels)}, sets=["train.epochs.x=1"])
    assert load_recipe(str(path), variables={"LABELS": str(labels)},
                       sets=["train.mixed_precision=no"]).train.mixed_precision == "no"
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(str(path), variables={"LABELS": str(labels)}, sets=["train.lr=[1"])
    # a data-set problem is one line on stderr, not a traceback
    assert train_main(["fit", "--config", str(path), "--var", f"LABELS={tmp_path / 'nope.csv'}",
                       "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("train: error:") and "nope.csv" in err and "Traceback" not in err


def test_bundled_recipes_parse():
    from train.recipe import RECIPES_DIR

    names = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
    assert {"joint-agin", "joint-plus-plus-agin", "default-model"} <= set(names)
    for name in names:
        r = load_recipe(name, variables={k: "/x" for k in ("AGIN_LABELS", "AGIN_IMAGES", "RAISE_ROOT", "CLIVE_ROOT",
                                                                  "AGIQA_ROOT")})
        assert r.data and r.joint_config()


def test_linear_probe_is_validated_as_epoch_zero(synthetic):
    root, labels, images = synthetic
    recipe = _recipe(labels, images, epochs=1, bootstrap=0, linear_probe=True, batching="per_dataset")
    res = run(recipe, root / "probe", cache_root=root / "cache", progress=False)
    first = res.history[0]
    assert first["epoch"] == 0 and set(first["probe"]) == {"technical", "rationality"}
    assert first["probe"]["technical"]["label"] == "mos_t"       # joint++: each branch its own label
    assert res.best_epoch in (0, 1)
    # the closed-form probe alone already ranks the synthetic validation images
    assert first["val_select"] > 0.3


def test_export_ships_fp16_weights_and_a_model_card(fitted, tmp_path):
    from safetensors.torch import load_file

    _, res, _ = fitted
    notice = tmp_path / "NOTICE.txt"
    notice.write_text("keep me")
    code = train_main(["export", str(res.out_dir), "--to", str(tmp_path / "shipped"), "--notice", str(notice),
                       "--notice", f"SYNTH-NOTICE.txt={notice}", "--licence", "synthetic data: no restrictions"])
    assert code == 0
    shipped = tmp_path / "shipped"
    assert (shipped / "NOTICE.txt").read_text() == "keep me"
    assert (shipped / "SYNTH-NOTICE.txt").read_text() == "keep me"    # NAME=PATH names the copy
    weights = load_file(str(shipped / "model.safetensors"))
    assert all(v.dtype == torch.float16 for v in weights.values() if v.is_floating_point())
    card = (shipped / "MODEL_CARD.md").read_text()
    srcc = json.loads((res.out_dir / "metrics.json").read_text())["test"]["synth"]["naturalness"]["srcc"]
    assert f"{srcc:.3f}" in card and "synthetic data: no restrictions" in card
    assert "Known limits" in card and "RAISE" not in card          # limits follow the run's data
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    a = NaturalnessScorer.from_pretrained(res.out_dir / "model", device="cpu").score(x)
    b = NaturalnessScorer.from_pretrained(shipped, device="cpu").score(x)
    torch.testing.assert_close(b.naturalness, a.naturalness, atol=2e-2, rtol=1e-2)  # fp16 rounding only
    # exporting again replaces the model folder only with --overwrite; a folder that is not a
    # model, or that holds the run being exported, is never deleted
    (shipped / "stale.txt").write_text("old")
    assert train_main(["export", str(res.out_dir), "--to", str(shipped)]) == 2
    assert (shipped / "stale.txt").exists() and (shipped / "NOTICE.txt").exists()
    assert train_main(["export", str(res.out_dir), "--to", str(shipped), "--overwrite"]) == 0
    assert not (shipped / "stale.txt").exists() and not (shipped / "NOTICE.txt").exists()
    for inside in (res.out_dir / "model", res.out_dir, res.out_dir.parent):
        before = sorted(p.name for p in inside.iterdir())
        assert train_main(["export", str(res.out_dir), "--to", str(inside), "--overwrite"]) == 2
        assert sorted(p.name for p in inside.iterdir()) == before
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    assert train_main(["export", str(res.out_dir), "--to", str(precious)]) == 2
    assert (precious / "thesis.tex").read_text() == "years of work"
    assert train_main(["export", str(res.out_dir), "--to", str(tmp_path / "x"), "--notice", "missing.txt"]) == 2
    assert not (tmp_path / "x").exists()
    # the scatter plots of the docs, from the run's predictions
    assert train_main(["plot", str(res.out_dir), "--to", str(tmp_path / "scatter.svg")]) == 0
    svg = (tmp_path / "scatter.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert train_main(["plot", str(tmp_path), "--to", str(tmp_path / "none.svg")]) == 2


def test_frozen_branch_stays_bit_identical_batch_norm_included(synthetic):
    from joint_core.checkpoint import load_model
    from train.tasks import build_task

    root, labels, images = synthetic
    recipe = _recipe(labels, images, epochs=2, bootstrap=0, freeze=["rationality"])
    torch.manual_seed(recipe.seed)
    before = {k: v.clone() for k, v in build_task(recipe).model.state_dict().items()}
    res = run(recipe, root / "frozen", cache_root=root / "cache", progress=False)
    after = load_model(res.out_dir / "model").state_dict()
    rat = [k for k in before if k.startswith("rationality.")]
    assert any("running_mean" in k for k in rat)                 # the tiny backbone has batch norm
    for k in rat:
        assert torch.equal(after[k].float(), before[k].float()), k
    assert any(not torch.equal(after[k].float(), before[k].float()) for k in before if k.startswith("technical."))


def test_distortion_ranking_prior_trains_and_logs_its_term(synthetic):
    from train.data import loader, prepare_data
    from train.tasks import build_task

    root, labels, images = synthetic
    recipe = _recipe(labels, images, epochs=1, bootstrap=0).with_overrides(
        {"loss": {"objective": "fs", "missing_labels": "skip", "use_wsd": False, "distortion_rank": 1.0,
                  "distortion_margin": 5.0}})
    data = prepare_data(recipe, 0, cache_root=root / "cache", progress=False)
    task = build_task(recipe)
    batch = next(iter(loader(data.items("train"), data.cache, 8, shuffle=False, seed=0)))
    loss, parts = task.loss(batch, torch.Generator().manual_seed(0))
    # a 5-MOS margin cannot be met by an untrained model: the term is active and in the total
    assert parts["rank"] > 0 and parts["loss"] == pytest.approx(parts["fs"] + parts["rank"], rel=1e-5)
    loss.backward()
    assert task.model.technical.head[-1].weight.grad is not None
    # the prior needs the per-branch objective
    other = _recipe(labels, images).with_overrides({"loss": {"distortion_rank": 1.0}})
    with pytest.raises(RecipeError, match="distortion_rank"):
        build_task(other).loss(batch, torch.Generator().manual_seed(0))


def test_joint_loss_runs_under_distributed_data_parallel(synthetic, tmp_path):
    """accelerate launch wraps the model in DDP: the Wasserstein pass on the low-frequency map
    must go through the wrapped forward (a side call to the bare model is not synchronised)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from train.data import loader, prepare_data
    from train.tasks import build_task

    root, labels, images = synthetic
    recipe = _recipe(labels, images)
    data = prepare_data(recipe, 0, cache_root=root / "cache", progress=False)
    task = build_task(recipe)
    assert task.needs_lfm
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        task.model = DistributedDataParallel(task.model, find_unused_parameters=True)
        batch = next(iter(loader(data.items("train"), data.cache, 4, shuffle=False, seed=0)))
        loss, parts = task.loss(batch, torch.Generator().manual_seed(0))
        loss.backward()
    finally:
        dist.destroy_process_group()
    assert parts["wsd"] > 0 and torch.isfinite(loss)
    grads = [p.grad for n, p in task.model.module.named_parameters() if n.startswith("rationality.backbone")]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


class _RedIsArtifact(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = x[:, 0:1]
        return torch.cat([-red, red], 1)


def test_localizer_reaches_training_export_and_test_scoring(synthetic, tmp_path):
    """--localizer: the exported config records the detector, the test predictions use it, and
    the "w/o localization" variant really trains without it."""
    import yaml

    root, labels, images = synthetic
    det = tmp_path / "end2end.pt"
    torch.jit.script(_RedIsArtifact()).save(str(det))
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_recipe(labels, images).to_dict()))
    common = ["--config", str(path), "--set", "train.epochs=1", "--set", "train.bootstrap=0",
              "--cache", str(root / "cache"), "--no-progress", "--localizer", str(det)]
    assert train_main(["ablate", *common, "--variants", "joint,w/o localization", "--out", str(tmp_path / "a")]) == 0
    joint_cfg = json.loads((tmp_path / "a" / "joint" / "model" / "config.json").read_text())
    plain_cfg = json.loads((tmp_path / "a" / "w-o-localization" / "model" / "config.json").read_text())
    assert joint_cfg["preprocess"]["technical"]["localizer"] == "pal4vst"
    assert plain_cfg["preprocess"]["technical"]["localizer"] == "none"

    rows = list(csv.DictReader((tmp_path / "a" / "joint" / "predictions.csv").open()))
    files = [str(images / r["name"]) for r in rows]
    logged = np.array([float(r["technical"]) for r in rows])
    with_det = NaturalnessScorer.from_pretrained(tmp_path / "a" / "joint" / "model", device="cpu", localizer=str(det))
    np.testing.assert_allclose(with_det.score(files).technical.numpy(), logged, atol=1e-5, rtol=0)
    with pytest.warns(UserWarning, match="localizer"):
        without = NaturalnessScorer.from_pretrained(tmp_path / "a" / "joint" / "model", device="cpu")
    assert not np.allclose(without.score(files).technical.numpy(), logged, atol=1e-4)

    # a recipe that asks for the detector without one is a one-line error
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(_recipe(labels, images).with_overrides(
        {"model": {"config": {"preprocess": {"technical": {"localizer": "pal4vst"}}}}}).to_dict()))
    with pytest.raises(RecipeError, match="--localizer"):
        run(load_recipe(str(tmp_path / "p.yaml")), tmp_path / "p", cache_root=root / "cache", progress=False)


def test_runs_of_one_split_are_never_mixed_with_another(synthetic, tmp_path):
    root, labels, images = synthetic
    recipe = _recipe(labels, images, epochs=1, bootstrap=0)
    run(recipe, tmp_path / "r", cache_root=root / "cache", progress=False)
    with pytest.raises(RecipeError, match="other splits"):
        run(recipe, tmp_path / "r", split_index=1, cache_root=root / "cache", progress=False, resume=True)

    # a fusion-only variant re-scores the base checkpoint only when it was trained on this split
    out = tmp_path / "ablate"
    experiments.ablate(recipe, out, variants=["joint"], split=0, cache_root=root / "cache", progress=False)
    experiments.ablate(recipe, out, variants=["S_T only"], split=1, cache_root=root / "cache", progress=False)
    on_1 = json.loads((out / "joint" / "splits" / "synth.json").read_text())
    from train.data import prepare_data

    split1 = prepare_data(recipe, 1, cache_root=root / "cache", progress=False).splits["synth"]
    assert sorted(on_1["test"]) == sorted(split1.test)


def test_ablate_over_splits_reports_mean_and_std(synthetic, tmp_path):
    root, labels, images = synthetic
    recipe = _recipe(labels, images, epochs=1, bootstrap=0)
    rows = experiments.over_splits("ablate", recipe, tmp_path, [0, 1], variants=["joint", "S_R only"],
                                   cache_root=root / "cache", progress=False)
    for i in (0, 1):
        assert (tmp_path / f"split-{i}" / "joint" / "model" / "config.json").is_file()
    per = [json.loads((tmp_path / f"split-{i}" / "joint" / "metrics.json").read_text()) for i in (0, 1)]
    values = rows["joint"]["synth"]["naturalness"]["srcc"]
    assert values == pytest.approx([m["test"]["synth"]["naturalness"]["srcc"] for m in per])
    md = (tmp_path / "ablation.md").read_text()
    assert f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}" in md and "paper Table 5" in md
    assert json.loads((tmp_path / "ablation.json").read_text())["splits"] == [0, 1]


def test_splits_option(synthetic):
    from train.__main__ import _parse_splits, build_parser

    _, labels, images = synthetic
    recipe = _recipe(labels, images)
    assert _parse_splits("all", recipe) == [0, 1] and _parse_splits("0, 3", recipe) == [0, 3]
    with pytest.raises(RecipeError, match="--splits"):
        _parse_splits("one", recipe)
    with pytest.raises(SystemExit):  # --split and --splits exclude each other
        build_parser().parse_args(["ablate", "-c", "x", "--split", "1", "--splits", "0,1"])


def test_cli_prints_a_split_warning_once_in_one_line(synthetic, tmp_path, capsys):
    import yaml

    root, labels, images = synthetic
    recipe = _recipe(labels, images).to_dict()
    del recipe["data"][0]["args"]["group_rule"]
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert train_main(["ablate", "--config", str(tmp_path / "r.yaml"), "--variants", "joint,S_T only", "--set",
                       "train.epochs=1", "--set", "train.bootstrap=0", "--out", str(tmp_path / "o"),
                       "--cache", str(root / "cache"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.count("train: warning: data synth: no content groups") == 1 and "UserWarning" not in err


def test_model_card_names_each_branch_head_and_its_data():
    """Issue 21 item 4: the card pairs each branch with its own head, and does not say the
    technical branch never saw generations when AGIQA-3K trained it."""
    from joint_core.config import get_preset
    from train.export import _data_limits, _describe_heads

    cfg = get_preset("tiny-test")
    cfg.technical.head_input, cfg.technical.head_activation = "tokens", "none"
    cfg.rationality.head_input, cfg.rationality.head_activation = "stages", "relu"
    text = _describe_heads(cfg)
    assert text.index("technical") < text.index("token statistics") < text.index("rationality") \
        < text.index("two-layer head on multi-level")
    cfg.rationality.head_input, cfg.rationality.head_activation = "tokens", "none"
    assert _describe_heads(cfg).startswith("each followed by a linear head on token")
    both = _data_limits({"data": [{"kind": "clive"}, {"kind": "agiqa3k"}]})
    assert "not from AI-generated" not in both and "AGIQA-3K" in both and "CLIVE" in both
    assert "not from AI-generated" in _data_limits({"data": [{"kind": "clive"}]})
