"""Checkpoint I/O: the one place where weights are read and written.

Format: a folder with ``config.json`` (:class:`~joint_core.config.JointConfig`) and
``model.safetensors``. Loading is strict (a missing, unexpected or mis-shaped tensor is an
error) and checks the SHA-256 of the tensors that :func:`save_model` records in the file's
metadata, so a tampered or truncated file fails loudly. Nothing is ever unpickled here except
the authors' ``.pth`` in :func:`convert_official`, read with ``weights_only=True``.

Model resolution (:func:`resolve_model`): an explicit path or hub id, else ``$JOINT_MODEL``,
else the user cache (``$JOINT_HOME`` or ``~/.cache/joint``, folder ``default``), else the
default model shipped inside the package.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from .backbones import (WeightMappingError, check_fits, strip_prefix,
                        torchvision_resnet_to_timm, torchvision_swin_to_timm)
from .config import (CONFIG_NAME, CalibrationConfig, ConfigError, JointConfig, get_preset, list_presets,
                     read_config_text)
from .model import JointModel
from .preprocess.images import first_line
from .errors import CheckpointError, NoModelError

WEIGHTS_NAME = "model.safetensors"
MODEL_CARD_NAME = "MODEL_CARD.md"
HASH_KEY = "joint_sha256"
ENV_MODEL = "JOINT_MODEL"
ENV_HOME = "JOINT_HOME"
SHIPPED_DEFAULT = Path(__file__).parent / "weights" / "default"

PathLike = Union[str, os.PathLike]


# --------------------------------------------------------------------------------------------
# save / load
# --------------------------------------------------------------------------------------------


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
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = OrderedDict((k, v.detach().cpu().contiguous()) for k, v in state.items())
    meta = {"format": "pt", HASH_KEY: state_hash(state), "joint_format_version": "1", **(metadata or {})}
    save_file(state, str(path), metadata=meta)
    return path


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
    from safetensors import safe_open

    from .preprocess.images import open_regular

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


# --------------------------------------------------------------------------------------------
# resolution
# --------------------------------------------------------------------------------------------


@dataclass
class ResolvedModel:
    path: Path
    origin: str   # "argument", "hub", "environment ($JOINT_MODEL)", "user cache", "shipped default"
    name: str     # what was asked for: a folder, a hub id, "default"

    def describe(self) -> str:
        return f"{self.path} ({self.origin})"


def user_cache_dir() -> Path:
    """``$JOINT_HOME``, else ``$XDG_CACHE_HOME/joint``, else ``~/.cache/joint``."""
    if os.environ.get(ENV_HOME):
        return Path(os.environ[ENV_HOME]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "joint"


def default_model_dir() -> Path:
    """Where ``joint convert`` installs a model so that it is picked up without ``--model``."""
    return user_cache_dir() / "default"


def is_model_dir(p: Path) -> bool:
    """Whether ``p`` is a joint model folder (``config.json`` + ``model.safetensors``)."""
    return (p / CONFIG_NAME).is_file() and (p / WEIGHTS_NAME).is_file()


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model(name: Optional[PathLike] = None, revision: Optional[str] = None) -> ResolvedModel:
    """Find the model folder for ``name`` (a folder, its ``config.json``, or a hub id) or, when
    ``name`` is None, by the resolution order in this module's docstring."""
    if name is not None:
        return _resolve_name(str(name), "argument", revision)
    env = os.environ.get(ENV_MODEL)
    if env:
        return _resolve_name(env, f"environment (${ENV_MODEL})", revision)
    cache = default_model_dir()
    if is_model_dir(cache):
        return ResolvedModel(cache, "user cache", str(cache))
    if is_model_dir(SHIPPED_DEFAULT):
        return ResolvedModel(SHIPPED_DEFAULT, "shipped default", "default")
    raise NoModelError(no_model_message())


def no_model_message() -> str:
    return (
        "no naturalness model found. Give one with --model / from_pretrained(path_or_hub_id), or "
        f"set ${ENV_MODEL}. To use the authors' JOINT checkpoint, download JOINT_2024.pth (links in "
        "the AGIN README) and run `joint convert JOINT_2024.pth` - it installs into "
        f"{default_model_dir()}, which is used automatically. To train your own: "
        "`python -m train fit --config train/recipes/...` (see README, 'Training').")


def _resolve_name(name: str, origin: str, revision: Optional[str]) -> ResolvedModel:
    if name == "default":
        if is_model_dir(SHIPPED_DEFAULT):
            return ResolvedModel(SHIPPED_DEFAULT, "shipped default", name)
        raise NoModelError("this installation ships no default model. " + no_model_message())
    p = Path(name).expanduser()
    if p.name == CONFIG_NAME and p.is_file():
        p = p.parent
    if p.is_dir():
        if not is_model_dir(p):
            missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not os.path.lexists(p / n)]
            broken = [_file_problem(p / n) for n in (CONFIG_NAME, WEIGHTS_NAME)
                      if os.path.lexists(p / n) and not (p / n).is_file()]
            hint = ""
            if any(p.glob("*.pth")):
                hint = " (it holds a .pth file: convert it with `joint convert FILE.pth OUT_DIR`)"
            what = ([f"missing {missing}"] if missing else []) + broken
            raise CheckpointError(f"{p}: not a joint model folder, {'; '.join(what)}{hint}")
        return ResolvedModel(p, origin, name)
    if p.is_file():
        if p.suffix in (".pth", ".pt", ".ckpt", ".bin"):
            raise CheckpointError(f"{p}: a PyTorch pickle, not a joint model folder; convert the "
                                  f"authors' checkpoint with `joint convert {p} OUT_DIR`")
        if p.suffix == ".safetensors":
            if (p.parent / CONFIG_NAME).is_file():
                return ResolvedModel(p.parent, origin, name)
            raise CheckpointError(f"{p}: a safetensors file needs its {CONFIG_NAME} beside it")
        raise CheckpointError(f"{p}: not a joint model (expected a folder with {CONFIG_NAME} and "
                              f"{WEIGHTS_NAME})")
    if _HUB_ID.match(name) and not name.startswith((".", "/", "~")):
        return ResolvedModel(download_from_hub(name, revision), "hub", name)
    if name in list_presets():
        raise CheckpointError(f"{name!r} is an architecture preset, not a trained model: build it with random "
                              f"weights with NaturalnessScorer.from_config({name!r}), or train it (README, "
                              "'Training'). `joint info --list` shows the trained models that can be loaded")
    raise CheckpointError(f"{name}: no such model folder, and not a hub id (owner/name); "
                          "`joint info --list` shows the models that can be loaded")


@dataclass(frozen=True)
class ModelEntry:
    """A model that :func:`resolve_model` can load: ``name`` is what to pass to it."""

    name: str
    path: Path
    origin: str        # "shipped default", "user cache", "environment ($JOINT_MODEL)", "hub cache"
    description: str
    is_default: bool   # the one from_pretrained() picks when no model is named


def list_models() -> List[ModelEntry]:
    """Trained models loadable here without a download, as ``timm.list_models`` lists names:
    ``$JOINT_MODEL``, the model folders of the user cache, hub models already in the local
    Hugging Face cache, and the shipped default. (Presets, :func:`~joint_core.list_presets`,
    are architectures with untrained weights, for ``from_config`` and training.)"""
    try:
        chosen: Optional[Path] = resolve_model().path.resolve()
    except CheckpointError:
        chosen = None
    found: List[ModelEntry] = []
    seen = set()

    def add(name: str, path: Path, origin: str) -> None:
        key = path.resolve()
        if key in seen or not is_model_dir(path):
            return
        seen.add(key)
        try:
            cfg = JointConfig.load(path)
            description = cfg.description or cfg.name
        except (ConfigError, OSError) as e:
            description = f"unreadable config ({e})"
        found.append(ModelEntry(name, path, origin, description, key == chosen))

    env = os.environ.get(ENV_MODEL)
    if env:
        try:
            resolved = _resolve_name(env, f"environment (${ENV_MODEL})", None)
            add(env, resolved.path, resolved.origin)
        except CheckpointError:
            pass
    cache = user_cache_dir()
    if cache.is_dir():
        for p in sorted(cache.iterdir()):
            add(str(p), p, "user cache")
    for repo_id, path in _hub_cached_models():
        add(repo_id, path, "hub cache")
    add("default", SHIPPED_DEFAULT, "shipped default")
    return found


def _hub_cached_models() -> List[tuple]:
    """``(repo_id, snapshot folder)`` of joint models in the local Hugging Face cache (no network)."""
    try:
        from huggingface_hub import scan_cache_dir

        info = scan_cache_dir()
    except Exception:  # noqa: BLE001 - no cache, or an unreadable one: nothing to list
        return []
    out = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for rev in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
            if is_model_dir(Path(rev.snapshot_path)):
                out.append((repo.repo_id, Path(rev.snapshot_path)))
                break
    return out


def _file_problem(path: Path) -> str:
    """Why ``path`` (which exists) cannot be read as a file: a folder, a broken link, a FIFO ..."""
    from .preprocess.images import open_regular

    try:
        open_regular(str(path), what="a file", error=CheckpointError).close()
    except CheckpointError as e:
        return str(e)
    return f"{path}: cannot be read"


def download_from_hub(repo_id: str, revision: Optional[str] = None) -> Path:
    """Fetch ``config.json`` + ``model.safetensors`` of a Hugging Face Hub repo (or take them
    from the local hub cache; ``HF_HUB_OFFLINE=1`` is honoured)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - a core dependency
        raise CheckpointError("huggingface_hub is needed to load hub models: pip install huggingface_hub") from None
    try:
        path = snapshot_download(repo_id, revision=revision,
                                 allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, MODEL_CARD_NAME, "README.md"])
    except Exception as e:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        why = "HF_HUB_OFFLINE is set and it is not in the local hub cache" if offline else \
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        raise CheckpointError(f"hub model {repo_id!r} could not be loaded ({why})") from None
    p = Path(path)
    if not is_model_dir(p):
        raise CheckpointError(f"hub repo {repo_id!r} has no {CONFIG_NAME} + {WEIGHTS_NAME}")
    return p


# --------------------------------------------------------------------------------------------
# the authors' checkpoint
# --------------------------------------------------------------------------------------------

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
    import numpy as np

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


def read_config_dict(directory: PathLike) -> dict:
    """The raw ``config.json`` of a model folder (for display)."""
    path = Path(directory) / CONFIG_NAME
    try:
        return json.loads(read_config_text(path))
    except (ValueError, RecursionError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
