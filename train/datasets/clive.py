"""LIVE In the Wild Image Quality Challenge (CLIVE, kind ``"clive"``): 1,162 authentically
distorted photographs (plus 7 training images) with a perceptual-quality MOS on 0-100."""

from __future__ import annotations

import os
from typing import Any, List

import numpy as np

from .base import (
    DatasetError,
    PathLike,
    ProblemLog,
    RatedDataset,
    Sample,
    check_duplicates,
    check_files,
    parse_score,
    register_dataset,
)

CLIVE_SCALE = (0.0, 100.0)
CLIVE_TRAINING_IMAGES = 7   # entries 0-6 of the .mat files: t1.bmp .. t7.bmp, shown to train subjects


def _load_mat(path: str, key: str) -> np.ndarray:
    try:
        from scipy.io import loadmat
    except ImportError as exc:  # scipy is in the `train` extras
        raise ImportError("reading CLIVE needs scipy (pip install 'joint-naturalness[train]')") from exc
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: file not found", source=path)
    try:
        mat = loadmat(path)
    except Exception as exc:  # scipy raises several types for a damaged file
        raise DatasetError(f"{path}: cannot be read as a MATLAB file ({exc})", source=path) from None
    if key not in mat:
        found = [k for k in mat if not k.startswith("__")]
        raise DatasetError(f"{path}: no variable {key!r}; variables found: {', '.join(found)}", source=path)
    return mat[key]


def _cell_text(cell: Any) -> str:
    """The string inside one cell of a MATLAB cell array (nested 1-element arrays)."""
    while isinstance(cell, np.ndarray):
        if cell.size != 1:
            raise ValueError(f"expected a 1-element cell, got shape {cell.shape}")
        cell = cell.reshape(-1)[0]
    return str(cell)


@register_dataset("clive")
def read_clive(root: PathLike, include_training_images: bool = False) -> RatedDataset:
    """CLIVE from its ``ChallengeDB_release/`` folder (``Data/*.mat``, ``Images/``).

    Names are paths relative to ``Images/`` (``"100.bmp"``, ``"trainingImages/t1.bmp"``).
    ``mos`` and ``mos_t`` are the MOS (0-100; CLIVE rates perceptual, i.e. technical, quality);
    ``mos_r`` is None. ``extra`` holds ``index`` (0-based entry in the .mat files) and, when
    ``Data/AllStdDev_release.mat`` is present, ``mos_std``. The usual protocol drops the 7
    training images (1,162 remain); ``include_training_images=True`` keeps them.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: CLIVE folder not found", source=root)
    data = os.path.join(root, "Data")
    images = os.path.join(root, "Images")
    names_path = os.path.join(data, "AllImages_release.mat")
    mos_path = os.path.join(data, "AllMOS_release.mat")
    cells = _load_mat(names_path, "AllImages_release").reshape(-1)
    mos = np.asarray(_load_mat(mos_path, "AllMOS_release"), dtype=np.float64).reshape(-1)
    if len(cells) != len(mos):
        raise DatasetError(f"{root}: {names_path} lists {len(cells)} images but {mos_path} has "
                           f"{len(mos)} MOS values", source=root)
    std_path = os.path.join(data, "AllStdDev_release.mat")
    std = None
    if os.path.isfile(std_path):
        std = np.asarray(_load_mat(std_path, "AllStdDev_release"), dtype=np.float64).reshape(-1)
        if len(std) != len(mos):
            std = None

    log = ProblemLog(root)
    samples: List[Sample] = []
    wheres: List[str] = []
    for i, cell in enumerate(cells):
        where = f"entry {i + 1}"
        try:
            file = _cell_text(cell).strip()
        except ValueError as exc:
            log.add(where, None, f"{names_path}: {exc}")
            continue
        candidates = [file, f"trainingImages/{file}"]
        name = next((c for c in candidates if os.path.isfile(os.path.join(images, *c.split("/")))), None)
        is_training = name is not None and name.startswith("trainingImages/") or i < CLIVE_TRAINING_IMAGES
        if is_training and not include_training_images:
            continue
        if name is None:
            log.add(where, file, f"image not found: {os.path.join(images, file)} "
                                 f"(nor in {os.path.join(images, 'trainingImages')})")
            continue
        value, problem = parse_score(mos[i], "MOS", CLIVE_SCALE)
        if problem:
            log.add(where, name, problem)
            continue
        extra = {"index": i}
        if std is not None:
            extra["mos_std"] = float(std[i])
        samples.append(Sample(name=name, path=os.path.abspath(os.path.join(images, *name.split("/"))),
                              mos=value, mos_t=value, extra=extra))
        wheres.append(where)
    check_duplicates([s.name for s in samples], wheres, log)
    check_files([(w, s.name, s.path, None) for w, s in zip(wheres, samples)], log, images)
    log.raise_if_any()
    readme = os.path.abspath(os.path.join(root, "README.txt"))
    # the copyright notice must accompany every copy: point at it
    licence = readme if os.path.isfile(readme) else "LIVE In the Wild Challenge: see the notice in its README.txt"
    return RatedDataset(name="clive", samples=samples, scale=CLIVE_SCALE, licence=licence,
                        distinct_content=True)  # 1,169 separate photographs
