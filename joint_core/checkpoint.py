"""Which model to load: model resolution and the models that can be loaded.

Model resolution (:func:`resolve_model`): an explicit path or hub id, else ``$JOINT_MODEL``,
else the user cache (``$JOINT_HOME`` or ``~/.cache/joint``, folder ``default``), else the
default model shipped inside the package. Two models ship (:func:`shipped_models`): ``"default"``
and ``"fast"``, each loaded by its name. :func:`list_models` lists what can be loaded without a
download.

The rooms beside it: :mod:`joint_core.weights_io` reads and writes weights and model folders
(:func:`load_model`, :func:`save_model`, ...) and :mod:`joint_core.official` converts the
authors' checkpoint; their public names are importable from here too, as before.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from .config import CONFIG_NAME, ConfigError, JointConfig, list_presets, read_config_text
from .errors import CheckpointError, NoModelError
from .extras import moved, require
from .preprocess.paths import open_regular
from .weights_io import (HASH_KEY, INT8_SCALE_SUFFIX, WEIGHTS_NAME, PathLike, check_state, dequantize_int8,
                         load_model, load_state_strict, load_weights, quantize_int8, read_weights, save_model,

                         save_weights, state_hash)

__all__ = [
    "CONFIG_NAME", "ENV_HOME", "ENV_MODEL", "HASH_KEY", "INT8_SCALE_SUFFIX", "MODEL_CARD_NAME", "SHIPPED_DEFAULT",
    "SHIPPED_FAST", "WEIGHTS_NAME", "CheckpointError", "ModelEntry", "NoModelError", "ResolvedModel", "check_state",
    "default_model_dir", "dequantize_int8", "download_from_hub", "is_model_dir", "list_models", "load_model",
    "load_state_strict", "load_weights", "no_model_message", "quantize_int8", "read_config_dict", "read_weights",
    "resolve_model", "save_model", "save_weights", "shipped_models", "state_hash", "user_cache_dir",
]

MODEL_CARD_NAME = "MODEL_CARD.md"
ENV_MODEL = "JOINT_MODEL"
ENV_HOME = "JOINT_HOME"
SHIPPED_DEFAULT = Path(__file__).parent / "weights" / "default"
SHIPPED_FAST = Path(__file__).parent / "weights" / "fast"


def shipped_models() -> Dict[str, Path]:
    """The models inside the package, by the name that loads them: ``"default"`` (the most
    accurate) and ``"fast"`` (a small CNN distilled from it, for CPUs)."""
    return {"default": SHIPPED_DEFAULT, "fast": SHIPPED_FAST}


@dataclass
class ResolvedModel:
    path: Path
    origin: str   # "argument", "hub", "environment ($JOINT_MODEL)", "user cache", "shipped default"
    name: str     # what was asked for: a folder, a hub id, "default", "fast"

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
        "`python -m train fit --config train/recipes/...` (see docs/training.md).")


def _resolve_name(name: str, origin: str, revision: Optional[str]) -> ResolvedModel:
    shipped = shipped_models()
    if name in shipped:
        if is_model_dir(shipped[name]):
            return ResolvedModel(shipped[name], f"shipped {name}", name)
        raise NoModelError(f"this installation ships no {name!r} model. " + no_model_message())
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
                              f"weights with NaturalnessScorer.from_config({name!r}), or train it "
                              "(docs/training.md). `joint info --list` shows the trained models that can be loaded")
    raise CheckpointError(f"{name}: no such model folder, and not a hub id (owner/name); "
                          "`joint info --list` shows the models that can be loaded")


@dataclass(frozen=True)
class ModelEntry:
    """A model that :func:`resolve_model` can load: ``name`` is what to pass to it."""

    name: str
    path: Path
    origin: str        # "shipped default", "shipped fast", "user cache", "environment ($JOINT_MODEL)", "hub cache"
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
    for name, path in shipped_models().items():
        add(name, path, f"shipped {name}")
    return found


def _hub_cached_models() -> List[tuple]:
    """``(repo_id, snapshot folder)`` of joint models in the local Hugging Face cache (no network)."""
    try:
        info = require("huggingface_hub", "listing hub models", CheckpointError).scan_cache_dir()
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
    try:
        open_regular(str(path), what="a file", error=CheckpointError).close()
    except CheckpointError as e:
        return str(e)
    return f"{path}: cannot be read"


def download_from_hub(repo_id: str, revision: Optional[str] = None) -> Path:
    """Fetch ``config.json`` + ``model.safetensors`` of a Hugging Face Hub repo (or take them
    from the local hub cache; ``HF_HUB_OFFLINE=1`` is honoured)."""
    snapshot_download = require("huggingface_hub", "loading hub models", CheckpointError).snapshot_download
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


def read_config_dict(directory: PathLike) -> dict:
    """The raw ``config.json`` of a model folder (for display)."""
    path = Path(directory) / CONFIG_NAME
    try:
        return json.loads(read_config_text(path))
    except (ValueError, RecursionError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None

# names that moved out of this module: still importable from here, with a DeprecationWarning
__getattr__ = moved(__name__, {name: "joint_core.official" for name in (
    "convert_official", "map_official_state", "read_official_checkpoint", "read_logistic_params")})
