"""`python -m train crosseval`: every model on the test part of every set, best-of-N within groups,
the anatomical-error check; on a synthetic set with the tiny model (no data sets, no network)."""

import json

import numpy as np
import pytest
from PIL import Image

from train.__main__ import main as train_main
from train.crosseval import crosseval, eval_sets
from train.report import jsonable
from train.recipe import recipe_from_dict
from train.synthetic import GROUP_RULE, make_synthetic_set


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("crosseval")
    labels, images = make_synthetic_set(root / "data", scenes=6, per_scene=5, size=48, seed=1)
    # a miniature ai-human-images layout: 2 prompts x 3 pictures, one annotator, error counts 0..5
    anat = root / "anatomy"
    header = "Image Id,Model,Prompt,Pic Num.,1. Missing Error-1.1 Torso,2. Extra Error-2.4 Hands,Annotator"
    rows, rng = [header], np.random.default_rng(0)
    for prompt in ("couple hugging", "person jogging"):
        folder = anat / "images" / "sdXL" / prompt.replace(" ", "_")
        folder.mkdir(parents=True)
        for k in range(1, 4):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"sdXL_x_0{k}.jpg")
            errors = ",".join(["1/1a"] * (k - 1))
            rows.append(f'sdxl_{prompt}_0{k},sdxl,{prompt},{k},"{errors}",{"1/1a" if k == 3 else ""},anno1')
    (anat / "data").mkdir(parents=True)
    (anat / "data" / "annotations.csv").write_text("\n".join(rows) + "\n")
    recipe = recipe_from_dict({
        "name": "synthetic",
        "model": {"preset": "tiny-test", "init": {"technical": "none", "rationality": "none"}},
        "data": [{"name": "synth", "kind": "agin",
                  "args": {"labels": str(labels), "image_dir": str(images), "group_rule": GROUP_RULE},
                  "rescale": None, "split": {"kind": "random", "ratios": [0.4, 0.2, 0.4], "n_splits": 2}}],
    })
    return root, recipe, anat


def _assert_close(a, b, path="", rel=1e-4):
    """Same structure, same values; floats within ``rel``. A rerun in the same process refits the
    bootstrap's 4-parameter logistic curves on 6-10 image resamples from inputs that can differ
    in the last bit (seen after other tests had run, never alone). Before the fit's prior
    (train.metrics.FIT_PRIOR) such a bit moved a CI bound by up to 0.06 (0.189 vs 0.253); with it
    +-2 ulp on every score moves these results by under 1e-6 relative."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_close(a[k], b[k], f"{path}.{k}", rel)
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, f"{path}[{i}]", rel)
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=rel, abs=1e-9), path
    else:
        assert a == b, path


def _rounded(obj):
    """Floats to 9 significant digits: JSON round-trips keep all bits, the comparison in
    ``_assert_close`` decides what counts as the same."""
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rounded(v) for v in obj]
    return float(f"{obj:.9g}") if isinstance(obj, float) else obj


def test_crosseval_scores_every_model_on_every_set_once(setup, tiny_model_dir, monkeypatch):
    root, recipe, anat = setup
    out = root / "out"
    sets = eval_sets(recipe, 0, str(anat))
    assert [s.name for s in sets] == ["synth", "anatomy"]
    assert sets[0].groups is not None and len(set(sets[0].groups)) < len(sets[0].names)
    assert sorted(-sets[1].target) == [0, 0, 1, 1, 3, 3]       # minus the error counts
    res = crosseval(recipe, [str(tiny_model_dir), str(tiny_model_dir)], out, anatomy=str(anat),
                    labels=["first", "second"], bootstrap=20, progress=False)
    for label in ("first", "second"):
        entry = res["models"][label]
        assert entry["ranking"] == "naturalness"
        synth = entry["sets"]["synth"]
        for key in ("technical", "rationality", "naturalness", "ranking"):
            assert synth[key]["pooled"]["n"] == len(sets[0].names)
            w = synth[key]["within"]
            assert w["n_groups"] == len(set(sets[0].groups)) and 0 <= w["top_pick"] <= 1
            assert "top_pick_ci" in w
        a = entry["sets"]["anatomy"]["rationality"]
        assert a["n_no_error"] == 2 and 0 <= a["auc_no_error"] <= 1
    # the same model twice: identical numbers; the default ranking is its naturalness
    def plain(r, m="first"):      # NaN -> null: a NaN (e.g. an undefined interval) never equals itself
        return _rounded(json.loads(json.dumps(jsonable(r["models"][m]["sets"]))))

    _assert_close(plain(res, "first"), plain(res, "second"))
    assert res["models"]["first"]["sets"]["synth"]["ranking"]["pooled"]["srcc"] == \
        res["models"]["first"]["sets"]["synth"]["naturalness"]["pooled"]["srcc"]
    md = (out / "crosseval.md").read_text()
    assert "## SRCC of every score on every set" in md and "## Best-of-N on synth" in md
    assert "## Anatomical errors" in md and md.count("| first |") == 4 * 4   # SRCC, 2 x best-of-N, anatomy
    assert json.loads((out / "crosseval.json").read_text())["sets"]["anatomy"]["n"] == 6
    # predictions are kept: a rerun scores nothing
    from joint_core import NaturalnessScorer

    monkeypatch.setattr(NaturalnessScorer, "score", lambda *a, **k: pytest.fail("scored again"))
    again = crosseval(recipe, [str(tiny_model_dir)], out, anatomy=str(anat), labels=["first"], bootstrap=20,
                      progress=False)
    _assert_close(plain(again), plain(res))


def test_crosseval_command_line(setup, tiny_model_dir, tmp_path, capsys):
    root, recipe, anat = setup
    import yaml

    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe.to_dict()))
    rc = train_main(["crosseval", "--config", str(tmp_path / "r.yaml"), "--models", str(tiny_model_dir),
                     "--names", "tiny", "--bootstrap", "10", "--out", str(tmp_path / "x"), "--no-progress"])
    assert rc == 0 and (tmp_path / "x" / "crosseval.md").is_file()
    rc = train_main(["crosseval", "--config", str(tmp_path / "r.yaml"), "--models",
                     f"{tiny_model_dir},{tiny_model_dir}", "--names", "same,same", "--out", str(tmp_path / "y")])
    assert rc == 2 and "one distinct name per model" in capsys.readouterr().err
