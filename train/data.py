"""From a recipe's data specs to batches: read, rescale, split, cache, sample.

Every image of every data set is decoded once into an :class:`~train.cache.ImageCache`;
batches carry uint8 tensors and labels, and the augmentation and branch inputs are computed
on the device by :class:`joint_core.preprocess.Preprocessor` inside the training loop.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor

from .cache import ImageCache
from .datasets import RatedDataset, Sample, load_dataset
from .labels import LABELS
from .recipe import DataSpec, Recipe, RecipeError
from .splits import Split, holdout_split, make_splits, split_with_official_test

PARTS = ("train", "val", "test")


@dataclass
class Item:
    """One sample of one data set (``key`` = ``"<dataset>/<name>"``, unique across sets)."""

    dataset: str
    sample: Sample

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.sample.name}"

    @property
    def ref_key(self) -> Optional[str]:
        return f"{self.dataset}/ref/{self.sample.ref_path}" if self.sample.ref_path else None


@dataclass
class Batch:
    images: List[Tensor]
    refs: Optional[List[Tensor]]
    mos: Tensor
    mos_t: Tensor
    mos_r: Tensor
    keys: List[str]
    datasets: List[str]

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class TrainingData:
    datasets: Dict[str, RatedDataset]
    splits: Dict[str, Split]
    cache: ImageCache
    parts: Dict[str, List[Item]] = field(default_factory=dict)

    def items(self, part: str) -> List[Item]:
        return self.parts[part]

    def matches_saved_splits(self, folder: Path) -> bool:
        """True when ``folder`` (a run's ``splits/``) holds exactly these splits."""
        for name, split in self.splits.items():
            f = Path(folder) / f"{name}.json"
            if not f.is_file():
                return False
            saved = Split.load(f)
            if any(sorted(getattr(saved, p)) != sorted(getattr(split, p)) for p in PARTS):
                return False
        return True

    def save_splits(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, split in self.splits.items():
            split.save(folder / f"{name}.json")


def _label(value: Optional[float]) -> float:
    return float("nan") if value is None else float(value)


def load_data(data_spec: DataSpec) -> RatedDataset:
    """The data set a recipe entry names, rescaled and with its dropped labels removed."""
    ds = load_dataset(data_spec.kind, **data_spec.args)
    if data_spec.rescale is not None:
        ds = ds.rescaled(tuple(data_spec.rescale))
    for lab in data_spec.drop_labels:
        for s in ds.samples:
            setattr(s, lab, None)
    return ds


def make_split(data_spec: DataSpec, ds: RatedDataset, index: int, seed: int) -> Split:
    args = dict(data_spec.split)
    kind = args.pop("kind", "random")
    args.setdefault("seed", seed)
    if kind not in ("file", "train") and not ds.distinct_content and not args.get("group_rule") \
            and all(smp.group is None for smp in ds.samples):
        warnings.warn(f"data {data_spec.name}: no content groups (a group column or group_rule), so every image "
                      "is its own group: images of one content can land in both train and test. Set "
                      f"data.{data_spec.name}.args.group_rule (or split.group_rule) if any images share content.",
                      stacklevel=2)
    try:
        if kind == "random":
            n = int(args.pop("n_splits", 5))
            if index >= n:
                raise RecipeError(f"data {data_spec.name}: split {index} requested but n_splits is {n}")
            return make_splits(ds, n_splits=n, **args)[index]
        if kind == "official":
            return split_with_official_test(ds, **args)
        if kind == "holdout":
            return holdout_split(ds, **args)
        if kind == "file":
            return Split.load(args["path"])
        if kind == "train":   # a set that only trains (e.g. synthetic anchors): no val, no test
            if args.keys() - {"seed"}:
                raise TypeError(f"split kind 'train' takes no options, got {sorted(args.keys() - {'seed'})}")
            return Split(train=ds.names(), val=[], test=[], seed=int(args["seed"]), index=0)
    except TypeError as e:
        raise RecipeError(f"data {data_spec.name}: split options {data_spec.split}: {e}") from None
    raise RecipeError(f"data {data_spec.name}: unknown split kind {kind!r}")


def n_splits(recipe: Recipe) -> int:
    """How many splits ``cv`` runs: the largest ``n_splits`` of the random-split data sets."""
    return max([int(d.split.get("n_splits", 5)) for d in recipe.data
                if d.split.get("kind", "random") == "random"] or [1])


def prepare_data(recipe: Recipe, split_index: int = 0, cache_root: Optional[Path] = None,
                 progress: bool = True) -> TrainingData:
    datasets = {data_spec.name: load_data(data_spec) for data_spec in recipe.data}
    splits = {data_spec.name: make_split(data_spec, datasets[data_spec.name], split_index, recipe.seed)
              for data_spec in recipe.data}
    parts: Dict[str, List[Item]] = {p: [] for p in PARTS}
    for name, ds in datasets.items():
        by_name = {s.name: s for s in ds.samples}
        for part in PARTS:
            parts[part].extend(Item(name, by_name[n]) for n in getattr(splits[name], part))
    to_cache = {}
    for items in parts.values():
        for it in items:
            to_cache[it.key] = it.sample.path
            if it.sample.ref_path:
                to_cache[it.ref_key] = it.sample.ref_path
    interpolation = recipe.joint_config().preprocess.interpolation if recipe.model.kind == "joint" else "bilinear"
    cache = ImageCache.build(sorted(to_cache.items()), max_side=recipe.train.cache_max_side,
                             root=cache_root, progress=progress, interpolation=interpolation)
    return TrainingData(datasets, splits, cache, parts)


class ItemSet(torch.utils.data.Dataset):
    """Items -> dicts of uint8 image (and reference) tensors and labels."""

    def __init__(self, items: Sequence[Item], cache: ImageCache):
        self.items = list(items)
        self.cache = cache

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        it = self.items[i]
        s = it.sample
        return {"image": self.cache[it.key], "ref": self.cache[it.ref_key] if it.ref_key else None,
                "mos": _label(s.mos), "mos_t": _label(s.mos_t), "mos_r": _label(s.mos_r),
                "key": it.key, "dataset": it.dataset}


def collate(rows: List[dict]) -> Batch:
    refs = [r["ref"] for r in rows]
    return Batch(
        images=[r["image"] for r in rows],
        refs=refs if all(x is not None for x in refs) else None,
        mos=torch.tensor([r["mos"] for r in rows], dtype=torch.float32),
        mos_t=torch.tensor([r["mos_t"] for r in rows], dtype=torch.float32),
        mos_r=torch.tensor([r["mos_r"] for r in rows], dtype=torch.float32),
        keys=[r["key"] for r in rows],
        datasets=[r["dataset"] for r in rows],
    )


class PerDatasetBatches(torch.utils.data.Sampler):
    """Batches that each hold images of one data set, in a shuffled interleaving (new every
    epoch, seeded). A data set's last partial batch is kept unless ``drop_last``."""

    def __init__(self, items: Sequence[Item], batch_size: int, seed: int, drop_last: bool = False):
        self.groups: Dict[str, List[int]] = {}
        for i, it in enumerate(items):
            self.groups.setdefault(it.dataset, []).append(i)
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.generator = torch.Generator().manual_seed(seed)

    def _batches(self, shuffle: bool) -> List[List[int]]:
        batches = []
        for idx in self.groups.values():
            order = torch.randperm(len(idx), generator=self.generator).tolist() if shuffle else range(len(idx))
            chunk = [idx[i] for i in order]
            for s in range(0, len(chunk), self.batch_size):
                b = chunk[s:s + self.batch_size]
                if len(b) == self.batch_size or (not self.drop_last and len(b) >= 2):
                    batches.append(b)
        return batches

    def __iter__(self):
        batches = self._batches(True)
        for j in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[j]

    def __len__(self) -> int:
        n = 0
        for idx in self.groups.values():
            full, rest = divmod(len(idx), self.batch_size)
            n += full + (1 if rest >= 2 and not self.drop_last else 0)
        return n


def loader(items: Sequence[Item], cache: ImageCache, batch_size: int, shuffle: bool, seed: int,
           num_workers: int = 0, drop_last: bool = False, batching: str = "mixed") -> torch.utils.data.DataLoader:
    if batching == "per_dataset":
        sampler = PerDatasetBatches(items, batch_size, seed, drop_last=drop_last)
        return torch.utils.data.DataLoader(ItemSet(items, cache), batch_sampler=sampler,
                                           num_workers=num_workers, collate_fn=collate)
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(ItemSet(items, cache), batch_size=batch_size, shuffle=shuffle,
                                       generator=g, num_workers=num_workers, collate_fn=collate,
                                       drop_last=drop_last)


def labels_of(items: Sequence[Item]) -> Dict[str, List[float]]:
    return {lab: [_label(getattr(it.sample, lab)) for it in items] for lab in LABELS}


def describe(data: TrainingData) -> str:
    lines = []
    for name, split in data.splits.items():
        lines.append(f"{name}: train {len(split.train)}, val {len(split.val)}, test {len(split.test)}")
    return "; ".join(lines)


def finite(x: float) -> bool:
    return x is not None and not math.isnan(x)
