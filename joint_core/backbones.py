"""The timm backbone factory, and the rules every weight mapping is made of: renaming by rule,
stripping a prefix, and :func:`check_fits` (a tensor whose shape does not match, a missing or a
left-over tensor is an error). The authors' checkpoint is mapped in :mod:`joint_core.official`;
the package-index ImageNet/CLIP importers that only training uses live in ``train/importers.py``.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Callable, Iterable, Mapping, Tuple, Union

import timm
import torch
from torch import nn

from .config import BranchConfig
from .errors import ConfigError, WeightMappingError
from .extras import moved

StateDict = Mapping[str, torch.Tensor]


def create_backbone(cfg: BranchConfig, pretrained: bool = False) -> Tuple[nn.Module, int]:
    """Build the timm backbone of a branch; returns ``(module, feature_dim)``.

    With ``head_input="pooled"`` the classifier is removed and ``feature_dim`` is the pooled
    width; with ``"logits"`` the classifier is kept with ``num_logits`` outputs; with
    ``"stages"`` it is the pooled width plus twice the channels of every feature stage, with
    ``"tokens"`` (ViTs) plus three times the width of every block.
    """
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
    elif cfg.head_input == "tokens":
        if getattr(model, "cls_token", None) is None:
            raise ConfigError(f"head_input 'tokens' needs a vision transformer with a class token; "
                              f"{cfg.backbone!r} has none (use 'stages')")
        dim = int(model.num_features) + 3 * sum(int(f["num_chs"]) for f in model.feature_info)
    else:
        dim = int(model.num_features)
    return model, dim


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

# names that moved out of this module: still importable from here, with a DeprecationWarning
__getattr__ = moved(__name__, {"torchvision_swin_to_timm": "joint_core.official",
                               "torchvision_resnet_to_timm": "joint_core.official"})
