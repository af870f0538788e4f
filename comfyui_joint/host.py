"""The ComfyUI host integration: what the nodes need from ComfyUI, in one place, and what happens without it.

- the ``naturalness`` model folder (``folder_paths``; ``extra_model_paths.yaml`` can add more),
- loading a model once per (file, device, dtype) while something still holds it,
- where the model runs and where it is parked between runs (``comfy.model_management``),
- progress bars and cancel (``comfy.utils.ProgressBar``, ``throw_exception_if_processing_interrupted``),
- ``ExecutionBlocker`` for outputs that have nothing to pass on,

and one thing ComfyUI does not do for us: scores already computed are kept (:class:`ScoreCache`,
keyed by the model and a fingerprint of each image's pixels), so that Score -> Filter -> Best of N
on the same images runs the model once per image, not once per node.

Every ComfyUI module is looked up when it is needed, so this package imports, and its nodes run,
without ComfyUI (tests, scripts); then there is no model folder, no progress bar and no offload.
Scoring itself is ``joint_core.NaturalnessScorer``; nothing here decodes or changes pixels or weights.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import posixpath
import tempfile
import threading
import uuid
import weakref
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Hashable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

from joint_core import NaturalnessScorer, NoModelError, ScoreResult, default_model_dir, pick_device, pick_dtype
from joint_core import checkpoint as _checkpoint
from joint_core.checkpoint import WEIGHTS_NAME, is_model_dir, no_model_message
from joint_core.config import CONFIG_NAME
from joint_core.result import AXES

log = logging.getLogger("comfyui_joint")

FOLDER = "naturalness"
MODEL_EXTENSIONS = {".safetensors"}
DEFAULT_CHOICE = "default (shipped)"
FAST_CHOICE = "fast (shipped)"
SHIPPED_CHOICES = {DEFAULT_CHOICE: "default", FAST_CHOICE: "fast"}   # loader choice -> shipped model name
USER_CHOICE = "user default (joint convert)"
DEVICE_CHOICES = ["default", "cpu"]
DTYPE_CHOICES = ["default", "fp32", "fp16", "bf16"]


def comfy_module(name: str) -> Optional[Any]:
    """``folder_paths``, ``comfy.utils``, ... when running inside ComfyUI, else ``None``."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


# --------------------------------------------------------------------------------------------
# the model folder
# --------------------------------------------------------------------------------------------


def register_model_folder() -> Optional[List[str]]:
    """Add ``models/naturalness`` to ComfyUI's model folders (first, before folders that
    ``extra_model_paths.yaml`` registered under ``naturalness:``) and make the folder list
    ``.safetensors`` files. Returns the folder list, or ``None`` outside ComfyUI."""
    fp = comfy_module("folder_paths")
    if fp is None:
        return None
    default = os.path.join(fp.models_dir, FOLDER)
    paths, exts = fp.folder_names_and_paths.get(FOLDER, ([], set()))
    paths = list(paths)
    if default not in paths:
        paths.insert(0, default)
    # a folder that only extra_model_paths.yaml named has no extensions (= every file)
    fp.folder_names_and_paths[FOLDER] = (paths, set(exts) | MODEL_EXTENSIONS)
    try:
        os.makedirs(default, exist_ok=True)  # so that users find where models go
    except OSError:
        pass
    return paths


def model_folders() -> List[str]:
    fp = comfy_module("folder_paths")
    if fp is None or FOLDER not in fp.folder_names_and_paths:
        return []
    return fp.get_folder_paths(FOLDER)


def model_choices() -> List[str]:
    """The loader's list: the two shipped models first, default and fast (even when this copy
    ships none, so that workflows naming them stay valid and say what is missing), the model ``joint convert``
    installed into the user cache when there is one, then every model in the naturalness
    folders: a joint model is a folder holding ``config.json`` + ``model.safetensors``, listed
    by its path (``joint-official``, ``mine/v2``); a model put straight into a naturalness
    folder is listed as ``model.safetensors``."""
    choices = list(SHIPPED_CHOICES)
    if is_model_dir(default_model_dir()):
        choices.append(USER_CHOICE)
    fp = comfy_module("folder_paths")
    if fp is None or FOLDER not in fp.folder_names_and_paths:
        return choices
    for rel in fp.get_filename_list(FOLDER):
        full = fp.get_full_path(FOLDER, rel)
        if full is None or not os.path.isfile(os.path.join(os.path.dirname(full), CONFIG_NAME)):
            continue
        rel = rel.replace(os.sep, "/")
        head, tail = posixpath.split(rel)
        if tail != WEIGHTS_NAME:
            continue
        label = head or rel
        if label not in choices:
            choices.append(label)
    return choices


def no_model_installed_message(choice: str) -> str:
    folders = model_folders()
    where = folders[0] if folders else "ComfyUI/models/naturalness"
    also = " (or another folder registered as 'naturalness:' in extra_model_paths.yaml)" if folders else ""
    return (
        f"Load Naturalness Model: {choice!r} is not installed. Put a joint model folder "
        f"(config.json + model.safetensors) into {where}{also}, refresh ComfyUI (press R) and pick "
        "it in 'model_name'. To use the authors' JOINT checkpoint, download JOINT_2024.pth (links "
        "in the AGIN README) and convert it into that folder: "
        f"`python -m joint_core convert JOINT_2024.pth {os.path.join(where, 'joint-official')}` "
        "(run it in the joint node pack folder with ComfyUI's Python, or `joint convert ...` when "
        f"joint is pip-installed). joint itself says: {no_model_message()}")


def resolve_choice(choice: str) -> Tuple[str, Path]:
    """A loader choice -> (spec for ``NaturalnessScorer.from_pretrained``, path of the model
    folder or file). Raises :class:`NoModelError` / :class:`FileNotFoundError` with a message
    that says what to do."""
    if choice in SHIPPED_CHOICES:
        name = SHIPPED_CHOICES[choice]
        path = _checkpoint.shipped_models()[name]
        if not is_model_dir(path):
            raise NoModelError(no_model_installed_message(choice))
        return name, path
    if choice == USER_CHOICE:
        d = default_model_dir()
        if not is_model_dir(d):
            raise NoModelError(no_model_installed_message(choice))
        return str(d), d
    parts = str(choice).replace("\\", "/").split("/")
    if not choice or os.path.isabs(choice) or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"Load Naturalness Model: model_name {choice!r} is not a name from the "
                         "naturalness model folder")
    folders = model_folders()
    for base in folders:
        cand = Path(base, *parts)
        if cand.is_dir() and is_model_dir(cand):
            return str(cand), cand
        if cand.is_file() and cand.name == WEIGHTS_NAME and is_model_dir(cand.parent):
            return str(cand.parent), cand.parent
    raise FileNotFoundError(
        f"Load Naturalness Model: no model {choice!r} in the naturalness model folders "
        f"{folders or '(none registered: not running inside ComfyUI)'}; refresh ComfyUI (press R) "
        "and pick one from the list")


def model_signature(path: Path) -> str:
    """Changes when the model's files change on disk (ComfyUI then reloads it)."""
    folder = path if path.is_dir() else path.parent
    weights = folder / WEIGHTS_NAME if path.is_dir() else path
    parts = []
    for f in (folder / CONFIG_NAME, weights):
        st = f.stat()
        parts.append(f"{f.name}:{st.st_mtime_ns}:{st.st_size}")
    return f"{path.resolve()}|" + "|".join(parts)


# --------------------------------------------------------------------------------------------
# placement: where a model runs, where it waits
# --------------------------------------------------------------------------------------------


def placement(device: str) -> Tuple[torch.device, torch.device]:
    """(load device, offload device) for the loader's ``device`` option.

    ``default`` inside ComfyUI: ComfyUI's compute device (so ``--cpu``, ``--cuda-device`` ...
    apply), parked on ComfyUI's offload device between runs (the CPU, unless ``--highvram`` /
    ``--gpu-only``). Outside ComfyUI: joint's own choice (CUDA, MPS, CPU), never moved."""
    if device not in DEVICE_CHOICES:
        raise ValueError(f"Load Naturalness Model: device must be one of {DEVICE_CHOICES}, got {device!r}")
    if device == "cpu":
        cpu = torch.device("cpu")
        return cpu, cpu
    mm = comfy_module("comfy.model_management")
    if mm is None:
        dev = pick_device(None)
        return dev, dev
    load = torch.device(mm.get_torch_device())
    offload = torch.device("cpu") if load.type == "cpu" else torch.device(mm.unet_offload_device())
    return load, offload


# --------------------------------------------------------------------------------------------
# scores already computed
# --------------------------------------------------------------------------------------------


def fingerprint(image: Tensor) -> bytes:
    """A fingerprint of one image tensor's content: SHA-256 of its shape, dtype, layout and bytes.

    One pass over the pixels (about 7 ms for a 1024x1024 float image on one core, a few percent
    of a forward pass), and any changed pixel changes it. A permuted view of contiguous memory -
    ComfyUI's ``[B, H, W, C]`` seen as ``[B, C, H, W]`` - is read in memory order, without a copy;
    the same pixels in another memory layout give another fingerprint (a cache miss, never a
    wrong hit)."""
    t = image.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    order = sorted(range(t.dim()), key=lambda d: -t.stride(d))
    t = t.permute(order)
    if not t.is_contiguous():
        t = t.contiguous()
    h = hashlib.sha256(f"{tuple(image.shape)}|{order}|{t.dtype}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.digest()


class CachedScore(NamedTuple):
    """One image's scores. ``error`` (it failed) and ``warning`` (it was flagged, and ranks last)
    are kept without the image's name in front (``*_named``: it had one): the same pixels get the
    name of wherever they come next."""

    technical: float
    rationality: float
    naturalness: float
    error: Optional[str] = None
    error_named: bool = False
    warning: Optional[str] = None
    warning_named: bool = False


class ScoreCache:
    """Scores by ``(model identity, image fingerprint)``, least recently used first out.

    Bounded in entries and in bytes (each entry is counted as :attr:`ENTRY_BYTES` plus the length
    of its error message - the key, the named tuple and the dictionary slot), so a server that
    scores for days holds a few megabytes at most. Thread-safe."""

    ENTRY_BYTES = 320

    def __init__(self, max_entries: int = 50_000, max_bytes: int = 32 << 20):
        if max_entries < 0 or max_bytes < 0:
            raise ValueError(f"cache bounds must be >= 0, got {max_entries} entries, {max_bytes} bytes")
        self.max_entries = int(max_entries)
        self.max_bytes = int(max_bytes)
        self._entries: "OrderedDict[Tuple[Hashable, bytes], CachedScore]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @classmethod
    def _size(cls, value: CachedScore) -> int:
        return cls.ENTRY_BYTES + sum(len(m) for m in (value.error, value.warning) if m)

    def get(self, key: Tuple[Hashable, bytes]) -> Optional[CachedScore]:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: Tuple[Hashable, bytes], value: CachedScore) -> None:
        size = self._size(value)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= self._size(old)
            if size > self.max_bytes or self.max_entries == 0:
                return
            self._entries[key] = value
            self._bytes += size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= self._size(dropped)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """What the entries are counted as (see the class docstring)."""
        return self._bytes


#: the scores of every model in this process (ComfyUI runs one graph at a time; bounded anyway)
SCORES = ScoreCache()


class NaturalnessModel:
    """The ``NATURALNESS_MODEL`` value: a scorer, its name, and where it runs and waits.

    ``identity`` names what the scores depend on (the model's files, device and dtype); models
    with the same identity share cached scores. By default every instance is its own."""

    def __init__(self, scorer: NaturalnessScorer, name: str, path: Path,
                 load_device: torch.device, offload_device: torch.device,
                 identity: Optional[Hashable] = None):
        self.scorer = scorer
        self.name = name
        self.path = path
        self.load_device = load_device
        self.offload_device = offload_device
        self.identity = identity if identity is not None else ("instance", uuid.uuid4().hex)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"NaturalnessModel({self.name!r}, {self.path}, runs on {self.load_device}, "
                f"waits on {self.offload_device}, {str(self.scorer.dtype).replace('torch.', '')})")

    def describe(self) -> str:
        return f"{self.name} on {self.load_device.type} {str(self.scorer.dtype).replace('torch.', '')}"

    def memory_required(self, batch_size: int, max_pixels: int) -> int:
        """A rough upper bound of the device memory one batch needs: the weights, plus per
        image a few float32 copies of the full-resolution input and the activations."""
        weights = sum(p.numel() * p.element_size() for p in self.scorer.model.parameters())
        return int(weights + batch_size * (48 * max_pixels + (128 << 20)))

    @contextmanager
    def on_device(self, batch_size: int = 1, max_pixels: int = 1 << 20) -> Iterator[NaturalnessScorer]:
        """Move the scorer to its load device for the duration (asking ComfyUI to free memory
        first), then park it on its offload device again."""
        mm = comfy_module("comfy.model_management")
        with self._lock:
            if mm is not None and self.load_device.type != "cpu":
                mm.free_memory(self.memory_required(batch_size, max_pixels), self.load_device)
            self.scorer.to(self.load_device)
            try:
                yield self.scorer
            finally:
                if self.offload_device != self.load_device:
                    self.scorer.to(self.offload_device)
                    if mm is not None:
                        mm.soft_empty_cache()

    def score(self, images: Sequence[Tensor], batch_size: int = 8, layout: str = "channels_first",
              cache: Optional[ScoreCache] = None) -> ScoreResult:
        """Score ``[B, C, H, W]`` tensors (a list, all flattened into one result, the image at
        position ``i`` of tensor ``k`` named ``input k[i]``) with a ComfyUI progress bar;
        ComfyUI's cancel stops it between batches. ``layout`` is passed to the scorer: the nodes
        hand over channels-first tensors, so nothing is guessed.

        Images whose pixels this model has scored before are taken from ``cache`` (default
        :data:`SCORES`), and identical images within the call are scored once: only the rest
        reach the model, and the progress bar counts those."""
        cache = SCORES if cache is None else cache
        mm = comfy_module("comfy.model_management")
        if mm is not None:
            mm.throw_exception_if_processing_interrupted()
        slices = [(f"input {k}[{i}]", t[i:i + 1]) for k, t in enumerate(images) for i in range(int(t.shape[0]))]
        keys = [(self.identity, layout, fingerprint(x)) for _, x in slices]
        found: Dict[Tuple[Hashable, bytes], CachedScore] = {}
        todo: Dict[Tuple[Hashable, bytes], Tensor] = {}
        for key, (_, x) in zip(keys, slices):
            if key in found or key in todo:
                continue
            hit = cache.get(key)
            if hit is not None:
                found[key] = hit
            else:
                todo[key] = x
        if todo:
            found.update(self._score_uncached(todo, batch_size, cache, layout))
            log.info("joint: %s scored %d image(s) (%d of %d known from earlier scores)", self.name, len(todo),
                     len(slices) - len(todo), len(slices))
        values = [found[key] for key in keys]
        errors, flagged = {}, {}
        for i, ((name, _), v) in enumerate(zip(slices, values)):
            if v.error is not None:
                errors[i] = _named(v.error, name) if v.error_named else v.error
            elif v.warning is not None:
                flagged[i] = _named(v.warning, name) if v.warning_named else v.warning
        cfg = self.scorer.config
        return ScoreResult(torch.tensor([v.technical for v in values], dtype=torch.float32),
                           torch.tensor([v.rationality for v in values], dtype=torch.float32),
                           torch.tensor([v.naturalness for v in values], dtype=torch.float32),
                           [name for name, _ in slices], errors, tuple(cfg.score_range), default_by=cfg.ranking,
                           warnings=flagged)

    def _score_uncached(self, todo: Dict[Tuple[Hashable, bytes], Tensor], batch_size: int,
                        cache: ScoreCache, layout: str) -> Dict[Tuple[Hashable, bytes], CachedScore]:
        mm = comfy_module("comfy.model_management")
        cu = comfy_module("comfy.utils")
        images = list(todo.values())
        max_pixels = max(int(t.shape[-2]) * int(t.shape[-1]) for t in images)
        bar = cu.ProgressBar(len(images)) if cu is not None else None

        def progress(done: int, total: int) -> None:
            if bar is not None:
                bar.update_absolute(done, total)
            if mm is not None:
                mm.throw_exception_if_processing_interrupted()

        with self.on_device(batch_size, max_pixels) as scorer:
            result = scorer.score(images, batch_size=batch_size, callback=progress, layout=layout)
        out = {}
        for i, (key, name) in enumerate(zip(todo, result.sources)):
            error, error_named = _unnamed(result.errors.get(i), name)
            warning, warning_named = _unnamed(result.warnings.get(i), name)
            value = CachedScore(*(float(getattr(result, ax)[i]) for ax in AXES), error=error, error_named=error_named,
                                warning=warning, warning_named=warning_named)
            cache.put(key, value)
            out[key] = value
        return out


def _unnamed(message: Optional[str], name: str) -> Tuple[Optional[str], bool]:
    """A message without the image's name in front, and whether it had it."""
    if message is not None and message.startswith(name + ": "):
        return message[len(name) + 2:], True
    return message, False


def _named(message: str, name: str) -> str:
    return f"{name}: {message}"


_CACHE: "weakref.WeakValueDictionary[tuple, NaturalnessModel]" = weakref.WeakValueDictionary()
_CACHE_LOCK = threading.Lock()


def load_naturalness_model(choice: str, device: str = "default", dtype: str = "default") -> NaturalnessModel:
    """Load (or reuse) the model for a loader choice.

    A model stays loaded while anything holds it - normally ComfyUI's cache of the loader's
    output - and every loader asking for the same files, device and dtype gets that same
    object. When ComfyUI drops it (another model picked, "Free model and node cache"), it is
    freed; when its files change on disk, it is loaded again."""
    if dtype not in DTYPE_CHOICES:
        raise ValueError(f"Load Naturalness Model: dtype must be one of {DTYPE_CHOICES}, got {dtype!r}")
    spec, path = resolve_choice(choice)
    load_device, offload_device = placement(device)
    torch_dtype = pick_dtype(None if dtype == "default" else dtype, load_device)
    key = (model_signature(path), str(load_device), str(offload_device), str(torch_dtype))
    with _CACHE_LOCK:
        model = _CACHE.get(key)
        if model is not None:
            return model
        scorer = NaturalnessScorer.from_pretrained(spec, device=offload_device, dtype=torch_dtype)
        model = NaturalnessModel(scorer, choice, path, load_device, offload_device, identity=key)
        _CACHE[key] = model
        log.info("joint: loaded naturalness model %s", model)
        return model


# --------------------------------------------------------------------------------------------
# outputs with nothing in them, previews
# --------------------------------------------------------------------------------------------


class _FallbackExecutionBlocker:
    """Stands in for ``comfy_execution.graph.ExecutionBlocker`` outside ComfyUI."""

    def __init__(self, message: Optional[str]):
        self.message = message

    def __repr__(self) -> str:
        return f"ExecutionBlocker({self.message!r})"


_FallbackExecutionBlocker.__name__ = "ExecutionBlocker"


def blocker(message: Optional[str] = None) -> Any:
    """An output value that makes ComfyUI skip the nodes fed by it: silently when ``message``
    is None, else with that message as the error of the node that reads it."""
    graph = comfy_module("comfy_execution.graph")
    cls = getattr(graph, "ExecutionBlocker", None) if graph is not None else None
    return (cls or _FallbackExecutionBlocker)(message)


def temp_directory() -> str:
    fp = comfy_module("folder_paths")
    if fp is not None:
        return fp.get_temp_directory()
    return os.path.join(tempfile.gettempdir(), "comfyui_joint")


def save_previews(images: Sequence[Any]) -> List[Dict[str, str]]:
    """Save PIL images into ComfyUI's temp folder; returns the ``ui.images`` entries that make
    the frontend show them on the node (as PreviewImage does)."""
    folder = temp_directory()
    os.makedirs(folder, exist_ok=True)
    stem = f"naturalness_{uuid.uuid4().hex[:10]}"
    out = []
    for i, img in enumerate(images):
        name = f"{stem}_{i:05}_.png"
        img.save(os.path.join(folder, name), compress_level=1)
        out.append({"filename": name, "subfolder": "", "type": "temp"})
    return out
