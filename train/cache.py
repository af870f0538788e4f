"""Decoded images cached once: uint8 RGB pixels in one memory-mapped file per data set.

Decoding PNG/JPEG/BMP is the slowest part of feeding a small model; the cache decodes every
image once (downscaled so its longer side is at most ``max_side``), writes the pixels into
``pixels.u8`` and an index (name -> offset, height, width) into ``index.json``. Reading an image
is then a slice of a memory map. The cache folder is keyed on the image files' names, sizes and
modification times and on ``max_side``, so a changed data set gets a fresh cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from joint_core.preprocess.images import ImageInputError, load_image
from joint_core.preprocess.pipeline import cap_longer, to_uint8

INDEX = "index.json"
PIXELS = "pixels.u8"


def default_cache_root() -> Path:
    base = os.environ.get("JOINT_TRAIN_CACHE")
    if base:
        return Path(base)
    from joint_core.checkpoint import user_cache_dir

    return user_cache_dir() / "train-cache"


def cache_key(paths: Sequence[str], max_side: int, interpolation: str = "bilinear") -> str:
    # bilinear keeps the key of caches built before the interpolation was configurable
    h = hashlib.sha256((f"v1:{max_side}" + ("" if interpolation == "bilinear" else f":{interpolation}")).encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{os.path.abspath(p)}|{st.st_size}|{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def decode(path: str, max_side: int, interpolation: str = "bilinear") -> np.ndarray:
    """Decode, convert to RGB and cap the longer side (resampled with ``interpolation``, the
    model's ``preprocess.interpolation``, as the scorer would); returns uint8 ``[3, H, W]``."""
    t = load_image(path)
    x = t.float() / 255.0 if t.dtype == torch.uint8 else t
    x = cap_longer(x[None], max_side, interpolation)[0]
    return to_uint8(x).numpy()


class ImageCache:
    """Read-only access to a built cache: ``cache[name]`` -> uint8 ``[3, H, W]`` tensor."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        meta = json.loads((self.folder / INDEX).read_text())
        self.max_side: int = meta["max_side"]
        self.index: Dict[str, Tuple[int, int, int]] = {k: tuple(v) for k, v in meta["images"].items()}
        size = os.path.getsize(self.folder / PIXELS)
        self._pixels = np.memmap(self.folder / PIXELS, dtype=np.uint8, mode="r", shape=(size,))

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, name: str) -> bool:
        return name in self.index

    def __getitem__(self, name: str) -> Tensor:
        off, h, w = self.index[name]
        arr = np.array(self._pixels[off:off + 3 * h * w]).reshape(3, h, w)
        return torch.from_numpy(arr)

    @classmethod
    def build(cls, items: Sequence[Tuple[str, str]], max_side: int = 1024,
              root: Optional[Path] = None, progress: bool = True,
              interpolation: str = "bilinear") -> "ImageCache":
        """Build (or reuse) the cache for ``(name, path)`` pairs."""
        root = Path(root) if root is not None else default_cache_root()
        names = [n for n, _ in items]
        if len(set(names)) != len(names):
            raise ValueError("image names in a cache must be unique")
        folder = root / cache_key([p for _, p in items], max_side, interpolation)
        if (folder / INDEX).is_file():
            cache = cls(folder)
            if set(cache.index) >= set(names):
                return cache
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (PIXELS + ".tmp")
        index: Dict[str, Tuple[int, int, int]] = {}
        errors = []
        offset = 0
        iterator = items
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(items, desc=f"decoding {len(items)} images", unit="img")
        with open(tmp, "wb") as f:
            for name, path in iterator:
                try:
                    arr = decode(path, max_side, interpolation)
                except ImageInputError as e:
                    errors.append(str(e))
                    continue
                f.write(arr.tobytes())
                index[name] = (offset, int(arr.shape[1]), int(arr.shape[2]))
                offset += arr.size
        if errors:
            tmp.unlink()
            raise ImageInputError(f"{len(errors)} image(s) could not be decoded: " + "; ".join(errors[:10]))
        os.replace(tmp, folder / PIXELS)
        (folder / INDEX).write_text(json.dumps({"max_side": max_side, "images": index}))
        return cls(folder)
