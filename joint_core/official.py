"""The authors' JOINT checkpoint (``JOINT_2024.pth``, torchvision layout) -> a joint model folder
(preset ``official``): read without unpickling code (``weights_only=True``), mapped by rule onto
timm's names, every tensor checked, saved with :func:`~joint_core.weights_io.save_model`."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .backbones import StateDict, rename_by_rules, strip_prefix
from .checkpoint import default_model_dir
from .config import CalibrationConfig, get_preset
from .errors import CheckpointError, WeightMappingError
from .model import JointModel
from .weights_io import PathLike, load_state_strict, save_model

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


OFFICIAL_PREFIXES = {
    "technical_feature_extraction.": "technical.backbone.",
    "rationality_feature_extraction.": "rationality.backbone.",
    "quality_T.": "technical.head.",
    "quality_R.": "rationality.head.",
}
# official heads are Sequential(Linear, Linear); ours are Sequential(Linear, act, dropout, Linear)
_HEAD_INDEX = {"0": "0", "1": "3"}


def map_official_state(state: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """The authors' torchvision-layout state dict -> our :class:`JointModel` keys."""
    state = OrderedDict((k[len("module."):] if k.startswith("module.") else k, v)
                        for k, v in state.items())
    unknown = [k for k in state if not k.startswith(tuple(OFFICIAL_PREFIXES))]
    if unknown:
        raise WeightMappingError(f"unexpected keys in the official checkpoint: {unknown[:8]}")
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    tech = torchvision_swin_to_timm(strip_prefix(state, "technical_feature_extraction."))
    rat = torchvision_resnet_to_timm(strip_prefix(state, "rationality_feature_extraction."))
    for k, v in tech.items():
        out["technical.backbone." + k] = v
    for k, v in rat.items():
        out["rationality.backbone." + k] = v
    for src, dst in (("quality_T.", "technical.head."), ("quality_R.", "rationality.head.")):
        for k, v in strip_prefix(state, src).items():
            idx, rest = k.split(".", 1)
            if idx not in _HEAD_INDEX:
                raise WeightMappingError(f"unexpected head layer {src}{k}")
            out[dst + _HEAD_INDEX[idx] + "." + rest] = v
    return out


def read_official_checkpoint(path: PathLike) -> Dict[str, torch.Tensor]:
    """Load ``JOINT_2024.pth`` safely (``weights_only=True``), unwrapping common containers."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot be read as a weights-only PyTorch checkpoint "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return obj


def read_logistic_params(path: PathLike) -> Sequence[float]:
    """The 4 logistic parameters of ``JOINT_2024.npy`` (read without pickle)."""
    try:
        arr = np.load(str(path), allow_pickle=False)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable .npy file ({e})") from None
    arr = np.asarray(arr, dtype=np.float64).reshape(-1)
    if arr.size != 4:
        raise CheckpointError(f"{path}: expected 4 logistic parameters, found {arr.size}")
    return [float(v) for v in arr]


def convert_official(src: PathLike, out_dir: Optional[PathLike] = None,
                     calibration: Optional[PathLike] = None) -> Path:
    """Convert the authors' ``JOINT_2024.pth`` into a joint model folder (preset ``official``).

    ``calibration``: optionally the companion ``JOINT_2024.npy``; its logistic (fitted from
    T + R to MOS) is then stored in the config and applied to naturalness - the authors'
    inference script ignores it, so leave it out to reproduce their printed numbers.
    Returns the output folder (default: the user-cache default, used automatically).
    """
    state = read_official_checkpoint(src)
    config = get_preset("official")
    if calibration is not None:
        config.calibration = CalibrationConfig(params=tuple(read_logistic_params(calibration)),
                                               input="sum")
    config.description = f"Converted from {Path(src).name} (authors' JOINT checkpoint)"
    try:
        mapped = map_official_state(state)
    except WeightMappingError as e:
        raise CheckpointError(f"{src}: {e}") from None
    model = JointModel(config)
    load_state_strict(model, mapped, str(src))
    out = Path(out_dir) if out_dir is not None else default_model_dir()
    save_model(model, out)
    return out
