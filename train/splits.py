"""Content-disjoint train / validation / test splits (AGIN paper, appendix C.1: 7:1:2, no image
content in two sets, repeated 5 times).

Whole content groups go to one set. Groups are shuffled with NumPy's legacy ``RandomState``,
whose stream is frozen across NumPy versions, so a split is reproducible from its seed; groups
are taken in sorted order before shuffling, so the result does not depend on the order of the
samples either. Within each set names keep the data set's order.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .datasets.base import DatasetError, PathLike, RatedDataset, apply_group_rule

_PARTS = ("train", "val", "test")


@dataclass
class Split:
    """Sample names of the three sets. ``seed`` is the base seed and ``index`` the repeat: split
    ``index`` of :func:`make_splits` shuffles with ``seed + index``."""

    train: List[str]
    val: List[str]
    test: List[str]
    seed: int
    index: int = 0

    def sizes(self) -> Tuple[int, int, int]:
        return len(self.train), len(self.val), len(self.test)

    def save(self, path: PathLike) -> None:
        """Write JSON ``{"train", "val", "test", "seed", "index"}`` (creating parent folders)."""
        path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        data = {"train": list(self.train), "val": list(self.val), "test": list(self.test),
                "seed": int(self.seed), "index": int(self.index)}
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
            fh.write("\n")

    @classmethod
    def load(cls, path: PathLike) -> "Split":
        """Read a file written by :meth:`save`; malformed files raise ValueError naming the file."""
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a split file (invalid JSON: {exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a split file (expected a JSON object)")
        missing = [k for k in (*_PARTS, "seed") if k not in data]
        if missing:
            raise ValueError(f"{path}: split file lacks {', '.join(missing)}")
        for k in _PARTS:
            if not isinstance(data[k], list) or not all(isinstance(n, str) for n in data[k]):
                raise ValueError(f"{path}: {k!r} must be a list of sample names")
        overlap = (set(data["train"]) & set(data["val"])) | (set(data["train"]) & set(data["test"])) \
            | (set(data["val"]) & set(data["test"]))
        if overlap:
            raise ValueError(f"{path}: {len(overlap)} name(s) in more than one set, e.g. {sorted(overlap)[:5]}")
        return cls(train=data["train"], val=data["val"], test=data["test"],
                   seed=int(data["seed"]), index=int(data.get("index", 0)))


def content_groups(dataset: RatedDataset, group_rule: Optional[str] = None) -> List[str]:
    """The content group of each sample, in sample order.

    A sample's own ``group`` wins; otherwise ``group_rule`` (a regex with one capture group,
    ``re.search`` on the name) gives the captured text (unmatched names raise one DatasetError
    listing them); otherwise the name itself (every image is its own content).
    """
    groups: List[Optional[str]] = [s.group for s in dataset.samples]
    todo = [i for i, g in enumerate(groups) if g is None]
    if group_rule is not None and todo:
        captured = apply_group_rule([dataset.samples[i].name for i in todo], group_rule,
                                    source=f"{dataset.name}: group_rule")
        for i, g in zip(todo, captured):
            groups[i] = g
    return [dataset.samples[i].name if g is None else g for i, g in enumerate(groups)]


def _check_ratios(ratios: Sequence[float]) -> np.ndarray:
    r = np.asarray([float(x) for x in ratios], dtype=np.float64)
    if r.shape != (3,) or not np.all(np.isfinite(r)) or np.any(r < 0) or r[0] <= 0:
        raise ValueError(f"ratios must be three non-negative numbers (train, val, test) with train > 0, "
                         f"got {tuple(ratios)!r}")
    return r / r.sum()


def _check_fraction(value: float, argument: str) -> float:
    v = float(value)
    if not (0.0 <= v < 1.0):
        raise ValueError(f"{argument} must be in [0, 1), got {value!r}")
    return v


def _grouped(groups: Sequence[str]) -> Tuple[List[str], Dict[str, int]]:
    """Sorted distinct groups and their sizes."""
    sizes: Dict[str, int] = {}
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    return sorted(sizes), sizes


def _assign(group_order: Sequence[str], sizes: Dict[str, int], fractions: np.ndarray) -> List[int]:
    """Give each group (in the given, already shuffled order) to the set furthest below its target.

    Targets are ``fractions * total``. Sets with fraction 0 never receive a group (some target is
    always still unmet while groups remain).
    """
    total = sum(sizes[g] for g in group_order)
    target = fractions * total
    filled = np.zeros(len(fractions))
    out: List[int] = []
    for g in group_order:
        deficit = np.where(fractions > 0, target - filled, -np.inf)
        k = int(np.argmax(deficit))
        filled[k] += sizes[g]
        out.append(k)
    return out


def _partition(names: Sequence[str], groups: Sequence[str], fractions: Sequence[float],
               rng: np.random.RandomState, what: str) -> List[List[str]]:
    """Content-disjoint partition of ``names`` into ``len(fractions)`` lists (dataset order kept)."""
    fr = np.asarray(fractions, dtype=np.float64)
    distinct, sizes = _grouped(groups)
    wanted = int(np.sum(fr > 0))
    if len(distinct) < wanted:
        raise ValueError(f"{what}: {len(distinct)} content group(s) cannot fill {wanted} non-empty sets")
    order = [distinct[i] for i in rng.permutation(len(distinct))]
    where = dict(zip(order, _assign(order, sizes, fr)))
    parts: List[List[str]] = [[] for _ in fr]
    for n, g in zip(names, groups):
        parts[where[g]].append(n)
    empty = [i for i, p in enumerate(parts) if not p and fr[i] > 0]
    if empty:
        raise ValueError(f"{what}: the content groups are too uneven to give every set a sample "
                         f"(set(s) {empty} empty; largest group has {max(sizes.values())} of {len(names)} samples)")
    return parts


def make_splits(dataset: RatedDataset, ratios: Sequence[float] = (0.7, 0.1, 0.2), n_splits: int = 5,
                seed: int = 0, group_rule: Optional[str] = None) -> List[Split]:
    """``n_splits`` random content-disjoint train/val/test splits (the paper's 7:1:2, 5 times).

    Split ``i`` shuffles the content groups with ``seed + i`` and hands each group in turn to the
    set furthest below its share, so set sizes are as close to ``ratios`` (normalised) as whole
    groups allow. The same inputs always give the same splits.
    """
    fr = _check_ratios(ratios)
    if int(n_splits) < 1:
        raise ValueError(f"n_splits must be >= 1, got {n_splits!r}")
    names = dataset.names()
    groups = content_groups(dataset, group_rule)
    out = []
    for i in range(int(n_splits)):
        rng = np.random.RandomState(_seed(seed + i))
        train, val, test = _partition(names, groups, fr, rng, f"{dataset.name} split {i}")
        out.append(Split(train=train, val=val, test=test, seed=int(seed), index=i))
    return out


def split_with_official_test(dataset: RatedDataset, val_fraction: float = 0.1, seed: int = 0,
                             group_rule: Optional[str] = None) -> Split:
    """The official test set untouched, and a seeded content-disjoint validation set carved out of
    the official training part (``val_fraction`` of it); the rest of that part is training.

    Samples in neither official list are left out. Content shared between the official train and
    test parts is the official split's business and is not changed.
    """
    vf = _check_fraction(val_fraction, "val_fraction")
    official = dataset.official_split
    if not official or "test" not in official or "train" not in official:
        raise ValueError(f"{dataset.name}: has no official train/test split")
    known = set(dataset.names())
    unknown = [n for part in ("train", "test") for n in official[part] if n not in known]
    if unknown:
        raise DatasetError.from_problems(f"{dataset.name}: official split",
                                         [f"{n!r}: not a sample of the data set" for n in unknown])
    test_set = set(official["test"])
    pool_set = set(official["train"]) - test_set
    groups = content_groups(dataset, group_rule)
    pool = [(s.name, g) for s, g in zip(dataset.samples, groups) if s.name in pool_set]
    test = [n for n in dataset.names() if n in test_set]
    rng = np.random.RandomState(_seed(seed))
    if vf == 0:
        train, val = [n for n, _ in pool], []
    else:
        train, val = _partition([n for n, _ in pool], [g for _, g in pool], [1 - vf, vf], rng,
                                f"{dataset.name} official train part")
    return Split(train=train, val=val, test=test, seed=int(seed), index=0)


def holdout_split(dataset: RatedDataset, test_fraction: float = 0.2, val_fraction: float = 0.1, seed: int = 0,
                  group_rule: Optional[str] = None) -> Split:
    """One content-disjoint hold-out split: ``test_fraction`` of the samples for testing, then
    ``val_fraction`` *of the remaining part* for validation (e.g. CLIVE 80/20 with a validation set
    carved from the 80). The test set does not depend on ``val_fraction``.
    """
    tf = _check_fraction(test_fraction, "test_fraction")
    vf = _check_fraction(val_fraction, "val_fraction")
    if tf == 0:
        raise ValueError("test_fraction must be > 0")
    names = dataset.names()
    groups = content_groups(dataset, group_rule)
    rng = np.random.RandomState(_seed(seed))
    rest, test = _partition(names, groups, [1 - tf, tf], rng, f"{dataset.name} test hold-out")
    if vf == 0:
        return Split(train=rest, val=[], test=test, seed=int(seed), index=0)
    rest_set = set(rest)
    kept = [(n, g) for n, g in zip(names, groups) if n in rest_set]
    train, val = _partition([n for n, _ in kept], [g for _, g in kept], [1 - vf, vf], rng,
                            f"{dataset.name} validation hold-out")
    return Split(train=train, val=val, test=test, seed=int(seed), index=0)


def _seed(value: int) -> int:
    """A RandomState seed from any integer (RandomState takes 0 .. 2**32 - 1)."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        if not (isinstance(value, float) and math.isfinite(value) and value == int(value)):
            raise ValueError(f"seed must be an integer, got {value!r}")
    return int(value) % (2 ** 32)
