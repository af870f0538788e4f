"""train.splits: content-disjoint, complete, seeded splits and their JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from train.datasets import DatasetError, RatedDataset, Sample
from train.splits import Split, content_groups, holdout_split, make_splits, split_with_official_test


def dataset(n_groups=60, seed=0, official=False, grouped_field=False) -> RatedDataset:
    """AGIN-like names ``<content>_<k>.png`` with 1-6 images per content."""
    rng = np.random.default_rng(seed)
    samples = []
    for g in range(n_groups):
        for k in range(int(rng.integers(1, 7))):
            name = f"c{g:03d}_{k}.png"
            samples.append(Sample(name, f"/x/{name}", float(rng.uniform(1, 5)),
                                  group=f"c{g:03d}" if grouped_field else None))
    rng.shuffle(samples)   # dataset order is not group order
    split = None
    if official:
        names = [s.name for s in samples]
        split = {"train": names[: int(0.85 * len(names))], "test": names[int(0.85 * len(names)):]}
    return RatedDataset("synthetic", samples, (1.0, 5.0), official_split=split)


RULE = r"^(c\d+)_"


def groups_of(ds, names, rule=RULE):
    g = dict(zip(ds.names(), content_groups(ds, rule)))
    return {g[n] for n in names}


def check_partition(ds, split, rule=RULE):
    parts = [split.train, split.val, split.test]
    everything = [n for p in parts for n in p]
    assert sorted(everything) == sorted(ds.names()), "every sample exactly once"
    gs = [groups_of(ds, p, rule) for p in parts]
    assert not (gs[0] & gs[1]) and not (gs[0] & gs[2]) and not (gs[1] & gs[2]), "content-disjoint"
    order = {n: i for i, n in enumerate(ds.names())}
    for p in parts:
        assert [order[n] for n in p] == sorted(order[n] for n in p), "dataset order kept"


def test_content_groups_precedence():
    ds = RatedDataset("d", [Sample("a_1.png", "/a", 1.0, group="G"), Sample("b_2.png", "/b", 1.0),
                            Sample("c_3.png", "/c", 1.0)], (1, 5))
    assert content_groups(ds) == ["G", "b_2.png", "c_3.png"]
    assert content_groups(ds, r"^([a-z])_") == ["G", "b", "c"]
    with pytest.raises(DatasetError) as exc:
        content_groups(ds, r"^(b)_")
    assert "'c_3.png'" in str(exc.value) and "'b_2.png'" not in str(exc.value)


@pytest.mark.parametrize("grouped_field", [False, True])
def test_make_splits_disjoint_complete_and_near_ratios(grouped_field):
    ds = dataset(grouped_field=grouped_field)
    rule = None if grouped_field else RULE
    splits = make_splits(ds, ratios=(0.7, 0.1, 0.2), n_splits=5, seed=3, group_rule=rule)
    assert [s.index for s in splits] == list(range(5)) and all(s.seed == 3 for s in splits)
    n = len(ds)
    for s in splits:
        check_partition(ds, s)
        # whole groups (at most 6 images) move: a set only takes a group while below its target,
        # so it never overshoots by a whole group; here none misses its target by more than one
        for size, ratio in zip(s.sizes(), (0.7, 0.1, 0.2)):
            assert -6 <= size - ratio * n < 6, (s.sizes(), n)
    tests = [frozenset(s.test) for s in splits]
    assert len(set(tests)) == 5, "the repeats differ"


def test_make_splits_deterministic_and_seed_dependent():
    ds = dataset()
    a = make_splits(ds, seed=7, group_rule=RULE)
    b = make_splits(ds, seed=7, group_rule=RULE)
    assert a == b
    c = make_splits(ds, seed=8, group_rule=RULE)
    assert a[0] != c[0]
    # split i of seed s shuffles with s + i: it equals split 0 of seed s + i (apart from bookkeeping)
    assert (a[1].train, a[1].val, a[1].test) == (c[0].train, c[0].val, c[0].test)
    # independent of the order of the samples in the data set
    shuffled = RatedDataset(ds.name, list(reversed(ds.samples)), ds.scale)
    d = make_splits(shuffled, seed=7, group_rule=RULE)
    assert [sorted(x.test) for x in d] == [sorted(x.test) for x in a]


def test_make_splits_singletons_hit_ratios_exactly():
    ds = RatedDataset("s", [Sample(f"{i}.png", f"/{i}", 3.0) for i in range(50)], (1, 5))
    for s in make_splits(ds, ratios=(7, 1, 2), n_splits=3, seed=0):
        assert s.sizes() == (35, 5, 10)


def test_make_splits_argument_errors():
    ds = dataset(n_groups=2)
    with pytest.raises(ValueError, match="ratios"):
        make_splits(ds, ratios=(0.5, 0.5))
    with pytest.raises(ValueError, match="ratios"):
        make_splits(ds, ratios=(0.0, 0.5, 0.5))
    with pytest.raises(ValueError, match="n_splits"):
        make_splits(ds, n_splits=0)
    with pytest.raises(ValueError, match="2 content group"):
        make_splits(ds, group_rule=RULE)
    ok = make_splits(ds, ratios=(0.5, 0, 0.5), n_splits=1, group_rule=RULE)[0]
    assert ok.val == [] and len(groups_of(ds, ok.train)) == 1


def test_split_with_official_test():
    ds = dataset(official=True)
    s = split_with_official_test(ds, val_fraction=0.1, seed=1)
    assert sorted(s.test) == sorted(ds.official_split["test"])
    assert sorted(s.train + s.val) == sorted(ds.official_split["train"])
    check_partition(ds, s, rule=None)
    pool = len(ds.official_split["train"])
    assert abs(len(s.val) - 0.1 * pool) <= 1
    # content-disjoint validation under a group rule; the official test set is still untouched
    g = split_with_official_test(ds, val_fraction=0.2, seed=1, group_rule=RULE)
    assert sorted(g.test) == sorted(ds.official_split["test"])
    assert not groups_of(ds, g.train) & groups_of(ds, g.val)
    assert abs(len(g.val) - 0.2 * pool) <= 6
    assert split_with_official_test(ds, seed=1) == s and split_with_official_test(ds, seed=2) != s
    with pytest.raises(ValueError, match="no official"):
        split_with_official_test(dataset())
    bad = RatedDataset("b", ds.samples, ds.scale, official_split={"train": ["ghost.png"], "test": []})
    with pytest.raises(DatasetError, match="'ghost.png'"):
        split_with_official_test(bad)


def test_holdout_split():
    ds = dataset(n_groups=120)
    s = holdout_split(ds, test_fraction=0.2, val_fraction=0.1, seed=4, group_rule=RULE)
    check_partition(ds, s)
    n = len(ds)
    assert abs(len(s.test) - 0.2 * n) <= 6
    assert abs(len(s.val) - 0.1 * (len(s.train) + len(s.val))) <= 6
    # the test set does not depend on the validation fraction
    assert holdout_split(ds, 0.2, 0.3, seed=4, group_rule=RULE).test == s.test
    assert holdout_split(ds, 0.2, 0.1, seed=5, group_rule=RULE).test != s.test
    assert holdout_split(ds, 0.2, 0.0, seed=4, group_rule=RULE).val == []
    with pytest.raises(ValueError, match="test_fraction"):
        holdout_split(ds, test_fraction=1.2)


def test_save_load_round_trip(tmp_path):
    ds = dataset()
    s = make_splits(ds, n_splits=2, seed=11, group_rule=RULE)[1]
    path = tmp_path / "sub" / "split_1.json"
    s.save(path)
    data = json.loads(path.read_text())
    assert set(data) == {"train", "val", "test", "seed", "index"} and data["index"] == 1
    assert Split.load(path) == s
    path.write_text(json.dumps({"train": ["a"], "val": ["a"], "test": [], "seed": 0}))
    with pytest.raises(ValueError, match="more than one set"):
        Split.load(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=str(path.name)):
        Split.load(path)
