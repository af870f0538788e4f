"""Typed configuration of a naturalness model.

A model is data plus one small module: everything that decides how an image becomes three
scores (backbones, head widths, preprocessing, fusion weights, calibration) lives in
:class:`JointConfig`, which is saved as ``config.json`` beside ``model.safetensors``.

Named presets (``paper``, ``official``, ``tiny-test``) live in a registry, see
:func:`get_preset` and :func:`register_preset`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Literal, Optional, Tuple, Union

from .ranking import DEFAULT_BY, check_by
from .errors import ConfigError

CONFIG_NAME = "config.json"
FORMAT_VERSION = 1

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------
# dataclasses
# --------------------------------------------------------------------------------------------


@dataclass
class BranchConfig:
    """One branch: a timm backbone followed by the head ``Linear(d, hidden) -> Linear(hidden, 1)``.

    ``head_input="pooled"`` feeds the backbone's pooled features to the head (the paper's design);
    ``"logits"`` keeps the backbone's ImageNet classifier and feeds its ``num_logits`` outputs to
    the head (the layout of the authors' rationality branch in ``JOINT_2024.pth``); ``"stages"``
    feeds the pooled features joined with the spatial mean and standard deviation of every
    stage's feature map (multi-level statistics: low-level texture as well as semantics);
    ``"tokens"`` (vision transformers) feeds the pooled features joined with, for every block,
    its class token and the mean and standard deviation of its patch tokens.
    ``head_norm`` normalises the head's input (stage statistics differ in scale by orders of
    magnitude): ``"layernorm"`` per image, ``"standardize"`` per feature with a mean and standard
    deviation fitted on the training images and stored with the weights.
    ``head_extra="technical"`` (rationality branch only) joins the technical branch's head input
    to this branch's own before the head: one linear head then reads both backbones' features;
    with ``backbone="none"`` it reads the technical features alone (one backbone, two heads).
    """

    backbone: str
    head_hidden: int = 128
    head_input: Literal["pooled", "logits", "stages", "tokens"] = "pooled"
    head_activation: Literal["none", "relu", "gelu"] = "none"
    head_dropout: float = 0.0
    head_norm: Literal["none", "layernorm", "standardize"] = "none"
    num_logits: int = 1000
    backbone_kwargs: Dict[str, Any] = field(default_factory=dict)
    head_extra: Literal["none", "technical"] = "none"


@dataclass
class TechnicalInputConfig:
    """How the technical branch's input is built (paper eq. 1-2).

    ``sampling="resize"``: the image is resized to ``size`` x ``size`` and cut into ``grid`` x
    ``grid`` patches. ``sampling="fragments"``: the image keeps its native resolution; one
    ``fragment`` x ``fragment`` patch is taken from each of the ``grid`` x ``grid`` cells (centred
    when scoring) and the patches are stitched into a ``grid*fragment`` square.

    With ``partition=True`` every clean patch is swapped with a clean 8-neighbour (artifact
    patches stay in place); ``partition=False`` feeds the image unshuffled (the paper's
    "w/o multi-perspective" ablation). The result is resized (shorter side) to ``resize`` when
    set and centre-cropped to ``crop``.

    ``mean`` / ``std``: this branch's input normalisation, when its backbone was pre-trained with
    other statistics than the model-wide ``preprocess.mean`` / ``std`` (e.g. CLIP's); ``None``
    uses the model-wide ones.
    """

    sampling: Literal["resize", "fragments"] = "resize"
    size: int = 512
    grid: int = 8
    fragment: int = 32
    partition: bool = True
    localizer: Literal["none", "pal4vst"] = "none"
    resize: Optional[int] = 224
    crop: int = 224
    mean: Optional[Tuple[float, float, float]] = None
    std: Optional[Tuple[float, float, float]] = None


@dataclass
class RationalityInputConfig:
    """The rationality branch sees the image (or its low-frequency map) resized and cropped.

    ``resize`` is the length of the shorter side after resizing (``None``: squash the whole
    image to ``crop`` x ``crop``); ``crop`` is the centre crop (random crop when training).
    ``native=True`` skips resizing and crops at the image's own resolution (images smaller than
    ``crop`` are padded). ``low_frequency=True`` feeds the low-frequency map instead of the image
    (official preset). ``mean`` / ``std``: this branch's own normalisation (``None``: the
    model-wide ``preprocess.mean`` / ``std``), as for the technical branch.
    """

    resize: Optional[int] = 224
    crop: int = 224
    low_frequency: bool = False
    native: bool = False
    mean: Optional[Tuple[float, float, float]] = None
    std: Optional[Tuple[float, float, float]] = None


@dataclass
class LowFrequencyConfig:
    """Ambrosio-Tortorelli minimisation (paper eq. 8), as in the authors' code.

    ``at="full"`` computes the map on the (``max_side``-capped) full-resolution image,
    ``"input"`` on the branch's input resolution (cheaper; what training uses by default).
    """

    alpha: float = 1000.0
    beta: float = 0.01
    epsilon: float = 0.01
    iterations: int = 1
    cg_max_iter: int = 6
    cg_rtol: float = 0.1
    at: Literal["full", "input"] = "full"


@dataclass
class PreprocessConfig:
    """Image -> tensors. ``quantize`` rounds to uint8 where the official PIL pipeline stores
    8-bit images; ``max_side`` caps the resolution an image is processed at (memory bound)."""

    technical: TechnicalInputConfig = field(default_factory=TechnicalInputConfig)
    rationality: RationalityInputConfig = field(default_factory=RationalityInputConfig)
    low_frequency: LowFrequencyConfig = field(default_factory=LowFrequencyConfig)
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    quantize: bool = False
    max_side: int = 2048
    seed: int = 0

    def normalization(self, branch: str) -> Tuple[Tuple[float, float, float], Tuple[float, float, float]]:
        """``(mean, std)`` that ``branch`` (``"technical"`` or ``"rationality"``) is normalised
        with: its own when set, else the model-wide ones."""
        b = getattr(self, branch)
        return (tuple(b.mean) if b.mean is not None else tuple(self.mean),
                tuple(b.std) if b.std is not None else tuple(self.std))


@dataclass
class FusionConfig:
    """naturalness = technical_weight * T + rationality_weight * R + bias (paper section 4.3)."""

    technical_weight: float = 0.145
    rationality_weight: float = 0.769
    bias: float = 0.0


@dataclass
class CalibrationConfig:
    """Optional 4-parameter logistic applied to the fused score (or to T + R):
    ``f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``."""

    params: Tuple[float, float, float, float]
    input: Literal["naturalness", "sum"] = "naturalness"


@dataclass
class JointConfig:
    """Everything needed to rebuild a naturalness model; saved as ``config.json``."""

    technical: BranchConfig = field(
        default_factory=lambda: BranchConfig("swin_tiny_patch4_window7_224"))
    rationality: BranchConfig = field(default_factory=lambda: BranchConfig("resnet50"))
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    calibration: Optional[CalibrationConfig] = None
    score_range: Tuple[float, float] = (1.0, 5.0)
    # the model's default ranking key (joint_core.ranking): an axis, or an {axis: weight} mix
    # (sum(w*score)/sum(w)). Every face ranks by it when the user names no key: the CLI's --top
    # without --sort (an explicit --sort or filter --by wins), the ComfyUI Best-of-N node's
    # "model default", the diffusers hook's by=None, ScoreResult.keep(by=None).
    ranking: Union[str, Dict[str, float]] = DEFAULT_BY
    name: str = ""
    description: str = ""
    format_version: int = FORMAT_VERSION

    # -- (de)serialisation ---------------------------------------------------------------

    def to_dict(self) -> Dict[str, Any]:
        return _to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "JointConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"config must be a JSON object, got {type(data).__name__}")
        version = data.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ConfigError(
                f"config format_version {version!r} is not supported by this joint "
                f"(expects {FORMAT_VERSION}); upgrade joint or re-export the model")
        cfg = build_dataclass(cls, data, "config")
        cfg.validate()
        return cfg

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "config.json") -> "JointConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{source}: not valid JSON ({e})") from None
        except RecursionError:
            raise ConfigError(f"{source}: not a config (JSON nested too deeply)") from None
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    def save(self, directory: Union[str, Path]) -> Path:
        path = Path(directory) / CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: Union[str, Path]) -> "JointConfig":
        path = Path(path)
        if path.is_dir():
            path = path / CONFIG_NAME
        return cls.from_json(read_config_text(path), source=str(path))

    def replace(self, **changes: Any) -> "JointConfig":
        return dataclasses.replace(self, **changes)

    # -- checks --------------------------------------------------------------------------

    def validate(self) -> None:
        for name in ("technical", "rationality"):
            b: BranchConfig = getattr(self, name)
            if not b.backbone or not isinstance(b.backbone, str):
                raise ConfigError(f"{name}.backbone must name a timm model")
            _positive(f"{name}.head_hidden", b.head_hidden)
            _positive(f"{name}.num_logits", b.num_logits)
            if not 0.0 <= b.head_dropout < 1.0:
                raise ConfigError(f"{name}.head_dropout must be in [0, 1), got {b.head_dropout}")
            if b.backbone == "none" and (name == "technical" or b.head_extra == "none"):
                raise ConfigError(f"{name}.backbone 'none' needs head_extra 'technical' (rationality branch only)")
            if b.head_extra not in ("none", "technical") or (name == "technical" and b.head_extra != "none"):
                raise ConfigError(f"{name}.head_extra must be 'none'"
                                  + (" or 'technical'" if name == "rationality" else "") + f", got {b.head_extra!r}")
        p = self.preprocess
        t = p.technical
        for key in ("size", "grid", "fragment", "crop"):
            _positive(f"preprocess.technical.{key}", getattr(t, key))
        if t.resize is not None:
            _positive("preprocess.technical.resize", t.resize)
        if t.sampling == "resize" and t.size % t.grid:
            raise ConfigError(
                f"preprocess.technical.size ({t.size}) must be a multiple of grid ({t.grid})")
        side = t.size if t.sampling == "resize" else t.grid * t.fragment
        if t.resize is None and t.crop > side:
            raise ConfigError(
                f"preprocess.technical.crop ({t.crop}) is larger than the stitched image ({side})")
        r = p.rationality
        _positive("preprocess.rationality.crop", r.crop)
        if r.resize is not None:
            _positive("preprocess.rationality.resize", r.resize)
            if r.resize < r.crop:
                raise ConfigError(
                    f"preprocess.rationality.resize ({r.resize}) is smaller than crop ({r.crop})")
        lf = p.low_frequency
        for key in ("alpha", "beta", "epsilon", "cg_rtol"):
            _positive(f"preprocess.low_frequency.{key}", getattr(lf, key))
        _positive("preprocess.low_frequency.iterations", lf.iterations)
        _positive("preprocess.low_frequency.cg_max_iter", lf.cg_max_iter)
        _positive("preprocess.max_side", p.max_side)
        working = max(side if t.resize is None else t.resize, r.resize or r.crop)
        if p.max_side < working:
            raise ConfigError(f"preprocess.max_side ({p.max_side}) is smaller than the model's working size "
                              f"({working} px): every image would be shrunk below what the model reads")
        if isinstance(p.seed, bool) or not isinstance(p.seed, int) or not 0 <= p.seed < 2 ** 63:
            raise ConfigError(f"preprocess.seed must be a whole number in [0, 2**63), got {p.seed!r}")
        for where, std in (("preprocess.std", p.std), ("preprocess.technical.std", p.technical.std),
                           ("preprocess.rationality.std", p.rationality.std)):
            if std is not None and any(s <= 0 for s in std):
                raise ConfigError(f"{where} must be positive, got {std}")
        for key in ("technical_weight", "rationality_weight", "bias"):
            v = getattr(self.fusion, key)
            if not math.isfinite(v):
                raise ConfigError(f"fusion.{key} must be finite, got {v}")
        if self.calibration is not None:
            if not all(math.isfinite(v) for v in self.calibration.params):
                raise ConfigError(f"calibration.params must be finite: {self.calibration.params}")
            if self.calibration.params[3] == 0:
                raise ConfigError("calibration.params[3] (the logistic's scale) must not be 0")
        try:
            check_by(self.ranking, "ranking")
        except (TypeError, ValueError) as e:
            raise ConfigError(str(e)) from None
        lo, hi = self.score_range
        if not lo < hi:
            raise ConfigError(f"score_range must be (low, high) with low < high, got {self.score_range}")


CONFIG_LIMIT = 1 << 20   # a config.json is a few KB; a larger file is not one


def read_config_text(path: Union[str, Path]) -> str:
    """The text of a ``config.json``; a file that cannot be read, is too large or is not UTF-8 is
    a :class:`ConfigError` naming it."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(CONFIG_LIMIT + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(raw) > CONFIG_LIMIT:
        raise ConfigError(f"{path}: larger than {CONFIG_LIMIT:,} bytes; not a model config")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); not a model config") from None


def _positive(name: str, value: Union[int, float]) -> None:
    if not (isinstance(value, (int, float)) and value > 0):
        raise ConfigError(f"{name} must be positive, got {value!r}")


# --------------------------------------------------------------------------------------------
# generic, strict dict -> dataclass conversion (unknown keys are errors, types are checked)
# --------------------------------------------------------------------------------------------


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    return obj


def build_dataclass(tp: Any, value: Any, where: str) -> Any:
    """Strictly convert JSON-like ``value`` into type ``tp`` (dataclasses, Optional, Literal,
    tuples, dicts, scalars); unknown keys and wrong types raise :class:`ConfigError` naming
    ``where`` (a dotted path)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return build_dataclass(arg, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: unexpected null")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be an object, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(names)}")
        kwargs = {k: build_dataclass(hints[k], v, f"{where}.{k}") for k, v in value.items()}
        try:
            return tp(**kwargs)
        except TypeError as e:  # a required field is missing
            raise ConfigError(f"{where}: {e}") from None
    if origin in (tuple, Tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(build_dataclass(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where} must have {len(args)} items, got {len(value)}")
        return tuple(build_dataclass(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {type(value).__name__}")
        item = args[0] if args else Any
        return [build_dataclass(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be an object, got {type(value).__name__}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported field type {tp!r}")  # pragma: no cover


# --------------------------------------------------------------------------------------------
# presets: a registry of named configurations
# --------------------------------------------------------------------------------------------

_PRESETS: Dict[str, Callable[[], JointConfig]] = {}


def register_preset(name: str) -> Callable[[Callable[[], JointConfig]], Callable[[], JointConfig]]:
    def deco(fn: Callable[[], JointConfig]) -> Callable[[], JointConfig]:
        if name in _PRESETS:
            raise ValueError(f"preset {name!r} is already registered")
        _PRESETS[name] = fn
        return fn

    return deco


def list_presets() -> list:
    return sorted(_PRESETS)


def get_preset(name: str) -> JointConfig:
    """A fresh :class:`JointConfig` for a registered preset name."""
    try:
        fn = _PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; known: {list_presets()}") from None
    cfg = fn()
    cfg.validate()
    return cfg


@register_preset("paper")
def _paper() -> JointConfig:
    """The paper's design: Swin-T on the artifact-guided patch partition (64x64 patches of the
    512x512 image, resized to 224), ResNet-50 on the image at 224, pooled features into heads."""
    return JointConfig(
        technical=BranchConfig("swin_tiny_patch4_window7_224"),
        rationality=BranchConfig("resnet50"),
        preprocess=PreprocessConfig(
            technical=TechnicalInputConfig(sampling="resize", size=512, grid=8, resize=224, crop=224),
            rationality=RationalityInputConfig(resize=224, crop=224, low_frequency=False),
            low_frequency=LowFrequencyConfig(at="input"),
        ),
        name="joint-paper",
        description="JOINT as specified in the AGIN paper (Swin-T technical, ResNet-50 rationality)",
    )


@register_preset("official")
def _official() -> JointConfig:
    """The authors' ``test_single_image.py``: 224 resize cut into 7x7 patches of 32 px, then
    Resize(384)/CenterCrop(224); the rationality branch sees the full-resolution low-frequency
    map and its head reads ResNet-50's 1000 ImageNet logits."""
    return JointConfig(
        technical=BranchConfig("swin_tiny_patch4_window7_224"),
        rationality=BranchConfig("resnet50", head_input="logits"),
        preprocess=PreprocessConfig(
            technical=TechnicalInputConfig(sampling="resize", size=224, grid=7, resize=384, crop=224),
            rationality=RationalityInputConfig(resize=384, crop=224, low_frequency=True),
            low_frequency=LowFrequencyConfig(at="full"),
            quantize=True,
        ),
        name="joint-official",
        description="Layout and preprocessing of the authors' JOINT_2024.pth",
    )


@register_preset("tiny-test")
def _tiny() -> JointConfig:
    """A few-hundred-thousand-parameter model for tests and examples (random weights)."""
    return JointConfig(
        technical=BranchConfig("test_efficientnet", head_hidden=16),
        rationality=BranchConfig("test_resnet", head_hidden=16),
        preprocess=PreprocessConfig(
            technical=TechnicalInputConfig(sampling="resize", size=64, grid=4, resize=None, crop=64),
            rationality=RationalityInputConfig(resize=64, crop=64),
            low_frequency=LowFrequencyConfig(at="input"),
            max_side=512,
        ),
        name="tiny-test",
        description="Tiny random model for tests; its scores mean nothing",
    )
