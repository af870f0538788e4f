"""ScoreResult and its one selection rule, ``keep``, on hand-made scores (no model needed).
The faces (CLI, ComfyUI nodes, diffusers hook) call ``keep``; their tests only check the call."""

import math

import pytest
import torch

from joint_core import JointConfig, ScoreResult, describe_by, get_preset
from joint_core.config import ConfigError

NAN = float("nan")


def make(nat, tech=None, errors=(), default_by="naturalness"):
    nat = torch.tensor(nat, dtype=torch.float32)
    tech = torch.tensor(tech, dtype=torch.float32) if tech is not None else nat.clone()
    rat = torch.full_like(nat, 3.0)
    errs = {i: f"img{i}: unreadable" for i in errors}
    for i in errs:
        nat[i] = tech[i] = rat[i] = NAN
    return ScoreResult(tech, rat, nat, [f"img{i}" for i in range(len(nat))], errs, default_by=default_by)


def test_keep_without_arguments_keeps_everything_in_input_order():
    res = make([1.0, 4.0, 2.0, 0.0], errors=[3])
    assert res.keep() == [0, 1, 2, 3]


def test_sort_orders_best_first_ties_in_input_order_unscored_last():
    res = make([2.0, 4.0, 2.0, 0.0, 4.0], errors=[3])
    assert res.keep(sort=True) == [1, 4, 0, 2, 3]
    assert res.keep(sort=True, descending=False) == [0, 2, 1, 4, 3]
    assert res.ranking() == [1, 4, 0, 2, 3]


def test_k_keeps_the_best_and_drops_unscored():
    res = make([2.0, 4.0, 3.0, 0.0], errors=[1])
    assert res.keep(k=2) == [2, 0]
    assert res.keep(k=10) == [2, 0, 3]          # k > n keeps every scored image
    assert res.keep(k=0) == []
    assert res.keep(k=1, descending=False) == [3]


def test_threshold_keeps_input_order_unless_sorted():
    res = make([3.5, 1.0, 4.0, 3.0, 2.0], errors=[4])
    assert res.keep(threshold=3.0) == [0, 2, 3]              # >= threshold, input order
    assert res.keep(threshold=3.0, sort=True) == [2, 0, 3]
    assert res.keep(threshold=3.0, k=1) == [2]
    assert res.keep(threshold=9.0) == []


def test_groups_are_selected_independently_in_group_order():
    #              group 0           group 1             group 2
    res = make([1.0, 3.0, 2.0,   5.0, 0.5, 4.0,   2.0, 2.0, 1.0], errors=[5])
    assert res.keep(k=1, group_size=3) == [1, 3, 6]           # ties: first in input order
    assert res.keep(k=2, group_size=3) == [1, 2, 3, 4, 6, 7]
    assert res.keep(threshold=2.0, group_size=3) == [1, 2, 3, 6, 7]
    assert res.keep(sort=True, group_size=3) == [1, 2, 0, 3, 4, 5, 6, 7, 8]
    assert res.keep(threshold=2.5, k=1, group_size=3) == [1, 3]   # group 2 keeps nothing
    with pytest.raises(ValueError, match="groups of 4"):
        res.keep(group_size=4)


def test_groups_by_label_are_selected_independently_in_order_of_first_appearance():
    #            a    b    a    c    b    a
    res = make([1.0, 5.0, 3.0, 2.0, 4.0, 2.5], errors=[3])
    labels = ["a", "b", "a", "c", "b", "a"]
    assert res.keep(k=1, groups=labels) == [2, 1]                 # group c has only a failed image
    assert res.keep(sort=True, groups=labels) == [2, 5, 0, 1, 4, 3]
    assert res.keep(threshold=2.5, groups=labels) == [2, 5, 1, 4]
    # labels that come back later still join their group (not consecutive runs)
    assert res.keep(groups=labels) == [0, 2, 5, 1, 4, 3]
    with pytest.raises(ValueError, match="3 labels for 6"):
        res.keep(groups=labels[:3])
    with pytest.raises(ValueError, match="not both"):
        res.keep(groups=labels, group_size=2)


def test_fraction_keeps_the_best_share_of_each_group_at_least_one():
    res = make([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    assert res.keep(fraction=0.2) == [9, 8]
    assert res.keep(fraction=0.7) == [9, 8, 7, 6, 5, 4, 3]        # 0.7 * 10 is 7, not 8 (float rounding)
    assert res.keep(fraction=0.01) == [9]                         # ceil: a scored group keeps one
    assert res.keep(fraction=1.0) == list(range(9, -1, -1))
    assert res.keep(fraction=0.5, k=2) == [9, 8]                  # the smaller bound
    # per group, counted over the scored images; unscored ones are dropped
    grouped = make([1.0, 2.0, 3.0, 4.0, 9.0, 8.0], errors=[3])
    assert grouped.keep(fraction=0.5, groups=[0, 0, 0, 0, 1, 1]) == [2, 1, 4]
    for bad in (0, 0.0, 1.5, -0.1, True, "0.2", NAN):
        with pytest.raises(ValueError, match="fraction"):
            res.keep(fraction=bad)


def test_by_an_axis_or_a_weighted_mix():
    res = make([4.0, 3.0, 2.0], tech=[1.0, 2.0, 5.0])
    assert res.keep(by="technical", k=1) == [2]
    assert res.keep(by="naturalness", k=1) == [0]
    # mix = (1*nat + 3*tech) / 4 = [1.75, 2.25, 4.25]
    assert torch.allclose(res.scores({"naturalness": 1, "technical": 3}), torch.tensor([1.75, 2.25, 4.25]))
    assert res.keep(by={"naturalness": 1, "technical": 3}, threshold=2.0) == [1, 2]
    assert describe_by({"naturalness": 1, "technical": 0.25, "rationality": 0}) == "1*naturalness + 0.25*technical"


def test_none_means_the_models_default_ranking():
    res = make([4.0, 3.0, 2.0], tech=[1.0, 2.0, 5.0], default_by="technical")
    assert res.keep(k=1) == [2] and res.ranking() == [2, 1, 0]
    assert res.select([1, 2]).default_by == "technical"
    mix = make([4.0, 3.0, 2.0], tech=[1.0, 2.0, 5.0], default_by={"naturalness": 1.0, "technical": 1.0})
    assert mix.keep(k=1) == [2] and mix.resolve_by() == {"naturalness": 1.0, "technical": 1.0}


@pytest.mark.parametrize("kwargs, msg", [
    (dict(by="beauty"), "unknown score axis"),
    (dict(by={"technical": -1.0}), ">= 0"),
    (dict(by={}), "all be zero"),
    (dict(threshold=NAN), "threshold"),
    (dict(threshold="3"), "threshold"),
    (dict(k=-1), "k must be"),
    (dict(k=1.5), "k must be"),
    (dict(group_size=0), "group_size"),
    (dict(group_size=True), "group_size"),
])
def test_bad_arguments_are_named(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        make([1.0, 2.0]).keep(**kwargs)


def test_empty_result():
    res = make([])
    assert res.keep() == [] and res.keep(k=3, group_size=2) == [] and res.ranking() == []


def test_config_ranking_round_trips_and_is_checked():
    cfg = get_preset("tiny-test").replace(ranking={"naturalness": 1.0, "technical": 0.25})
    again = JointConfig.from_json(cfg.to_json())
    assert again.ranking == {"naturalness": 1.0, "technical": 0.25}
    assert JointConfig.from_json(get_preset("tiny-test").to_json()).ranking == "naturalness"
    for bad in ("beauty", {"technical": -1}, {}):
        with pytest.raises(ConfigError, match="ranking"):
            get_preset("tiny-test").replace(ranking=bad).validate()


def test_scorer_puts_the_models_ranking_on_the_result(tiny_model_dir):
    from joint_core import NaturalnessScorer, load_model

    model = load_model(tiny_model_dir)
    model.config = model.config.replace(ranking="technical")
    res = NaturalnessScorer(model, device="cpu").score([torch.rand(3, 32, 32) * s for s in (0.2, 1.0, 0.6)])
    assert res.default_by == "technical"
    expected = sorted(range(3), key=lambda i: -float(res.technical[i]))
    assert res.ranking() == expected and not math.isnan(float(res.technical[0]))
