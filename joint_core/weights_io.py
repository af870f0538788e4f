"""Weights I/O: the one place where weights are read and written.

Format: a folder with ``config.json`` (:class:`~joint_core.config.JointConfig`) and
``model.safetensors``. Loading is strict (a missing, unexpected or mis-shaped tensor is an
error) and checks the SHA-256 of the tensors that :func:`save_model` records in the file's
metadata, so a tampered or truncated file fails loudly. Nothing is ever unpickled here (the
authors' ``.pth`` is read in :mod:`joint_core.official`, with ``weights_only=True``). Which model
folder to load is :mod:`joint_core.checkpoint`'s job.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .backbones import check_fits
from .config import CONFIG_NAME, ConfigError, JointConfig
from .errors import CheckpointError, WeightMappingError
from .model import JointModel
from .preprocess.items import first_line
from .preprocess.paths import open_regular

PathLike = Union[str, os.PathLike]

WEIGHTS_NAME = "model.safetensors"
HASH_KEY = "joint_sha256"


def state_hash(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of every tensor (sorted by name)."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_weights(state: Mapping[str, torch.Tensor], path: PathLike,
                 metadata: Optional[Mapping[str, str]] = None) -> Path:
    """Write tensors to a safetensors file with their SHA-256 (:func:`state_hash`) in its
    metadata, so that :func:`read_weights` can tell a modified or truncated file. Every weights
    file the project writes - shipped models, training exports, resume states - goes through here."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = OrderedDict((k, v.detach().cpu().contiguous()) for k, v in state.items())
    meta = {"format": "pt", HASH_KEY: state_hash(state), "joint_format_version": "1", **(metadata or {})}
    save_file(state, str(path), metadata=meta)
    # safetensors (0.8) writes through a private temporary file, so the weights came out 0600:
    # unreadable to the group, another user or a container that serves the model. A file we
    # write gets the usual permissions, as open() would give it.
    os.chmod(path, 0o666 & ~_umask())
    return path


def _umask() -> int:
    """This process's umask, read without changing it where Linux tells it (``/proc``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)   # elsewhere: the classic read-and-restore
    os.umask(mask)
    return mask


INT8_SCALE_SUFFIX = ".int8_scale"


def quantize_int8(weight: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: ``weight ~ q * scale[:, None]`` with ``scale = max|row| / 127``
    (float32). A weight that already holds int8 levels times a per-row scale (e.g. dequantised
    from a dynamically quantised export) comes back exactly."""
    w = weight.detach().to(torch.float32).reshape(weight.shape[0], -1)
    scale = w.abs().amax(1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.reshape(weight.shape), scale


def dequantize_int8(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Replace every int8 tensor that has a ``<name>.int8_scale`` companion by its float32 value."""
    out = {k: v for k, v in state.items() if not k.endswith(INT8_SCALE_SUFFIX)}
    for key in state:
        if not key.endswith(INT8_SCALE_SUFFIX):
            continue
        name = key[: -len(INT8_SCALE_SUFFIX)]
        q, scale = state.get(name), state[key]
        if q is None or q.dtype != torch.int8 or scale.dim() != 1 or scale.shape[0] != q.shape[0]:
            raise CheckpointError(f"{key}: an int8 scale without a matching int8 tensor {name!r}")
        shape = [-1] + [1] * (q.dim() - 1)
        out[name] = q.to(torch.float32) * scale.to(torch.float32).view(shape)
    return out


def save_model(model: JointModel, directory: PathLike,
               dtype: Optional[torch.dtype] = None, int8: Sequence[str] = ()) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (optionally cast, e.g. fp16 to ship).

    ``int8``: regular expressions (``re.search``) of weight names stored as int8 with a float32
    scale per output row (``<name>.int8_scale``; see :func:`quantize_int8`), for large frozen
    weights that came from an int8 source; :func:`read_weights` turns them back into float32.
    Only floating tensors of 2 or more dimensions are quantised.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    patterns = [re.compile(p) for p in int8]
    state = OrderedDict()
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if patterns and v.is_floating_point() and v.dim() >= 2 and any(p.search(k) for p in patterns):
            q, scale = quantize_int8(v)
            state[k] = q.contiguous()
            state[k + INT8_SCALE_SUFFIX] = scale.contiguous()
            continue
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        state[k] = v.contiguous().clone()
    model.config.save(directory)
    save_weights(state, directory / WEIGHTS_NAME)
    return directory


def read_weights(path: PathLike, verify: bool = True) -> Dict[str, torch.Tensor]:
    """Read a safetensors file, checking the recorded hash when there is one (over the stored
    tensors); int8-stored weights come back as float32 (:func:`dequantize_int8`)."""
    path = Path(path)
    open_regular(str(path), what="a weights file", error=CheckpointError).close()  # missing, unreadable, a FIFO ...
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    expected = meta.get(HASH_KEY)
    if verify and expected is not None:
        actual = state_hash(state)
        if actual != expected:
            raise CheckpointError(
                f"{path}: weights do not match the checksum recorded when they were saved "
                f"(recorded {expected[:12]}..., found {actual[:12]}...): the file was modified "
                "or corrupted")
    if any(k.endswith(INT8_SCALE_SUFFIX) for k in state):
        try:
            state = dequantize_int8(state)
        except CheckpointError as e:
            raise CheckpointError(f"{path}: {e}") from None
    return state


def check_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str,
                target: str = "the model in config.json") -> None:
    """A CheckpointError naming ``source`` unless ``state`` fills ``model`` exactly (which may
    be a model on the meta device: only names and shapes are compared)."""
    try:
        check_fits(state, model)
    except WeightMappingError as e:
        raise CheckpointError(f"{source}: weights do not fit {target}: {e}") from None


def load_state_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str,
                      target: str = "the model in config.json") -> None:
    """Load ``state`` into ``model``; any missing, unexpected or mis-shaped tensor is an error."""
    check_state(model, state, source, target)
    model.load_state_dict(state, strict=True)


def load_weights(module: torch.nn.Module, path: PathLike, verify: bool = True) -> None:
    """Load a safetensors file into ``module`` strictly, checking its recorded hash: the
    counterpart of :func:`save_weights` for anything that is not a whole model folder."""
    load_state_strict(module, read_weights(path, verify=verify), str(path), target=f"the {type(module).__name__}")


def load_model(directory: PathLike, verify: bool = True) -> JointModel:
    """Build the model described by ``directory/config.json`` and load its weights (CPU, fp32)."""
    directory = Path(directory)
    cfg_path = directory / CONFIG_NAME
    if not cfg_path.is_file():
        raise CheckpointError(f"{directory}: no {CONFIG_NAME} (not a joint model folder)")
    try:
        config = JointConfig.load(cfg_path)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    state = read_weights(directory / WEIGHTS_NAME, verify=verify)
    # the model is first built on the meta device (no memory) and checked against the weights,
    # so that a config asking for an enormous model, or one timm cannot build, is a named error
    try:
        with torch.device("meta"):
            skeleton = JointModel(config)
    except (ConfigError, ValueError, TypeError, RuntimeError, KeyError, AssertionError) as e:
        raise CheckpointError(f"{cfg_path}: cannot build the model it describes ({first_line(e)})") from None
    check_state(skeleton, state, str(directory / WEIGHTS_NAME))
    model = JointModel(config)
    model.load_state_dict(state, strict=True)
    return model.eval()
