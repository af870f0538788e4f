"""Anatomical errors in generated people (kind ``"anatomy"``), for evaluation only.

github ``hastingslab-org/ai-human-images``: 240 photorealistic images of people (80 each from
DALL-E 3, SDXL and Stable Cascade; 10 prompts x 8 images per generator) and
``data/annotations.csv``, where annotators marked anatomical errors (missing / extra /
configuration / orientation / proportion, for torso, limbs, feet, hands and face). The set has
no MOS and no licence file: it is a rationality check (an image with more errors should score
lower), never training data.
"""

from __future__ import annotations

import os
import re
from typing import Dict, List

import numpy as np

from .base import DatasetError, PathLike, ProblemLog, RatedDataset, Sample, read_table, register_dataset

ANATOMY_LICENCE = "ai-human-images: no licence file; evaluation only"
_FOLDERS = {"dall-e3": "dall-e3", "sdxl": "sdXL", "stablecascade": "stable_cascade"}
_CATEGORY = re.compile(r"^\d\. ")


def _image_file(folder: str, number: int) -> List[str]:
    """The file of picture ``number`` in a prompt folder (``..._<NN>.png/jpg``). One file in the
    repository is misnamed (``sdXL_physician_018.jpg`` for picture 8): a picture without its own
    file takes the one file that no picture number claims."""
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith((".png", ".jpg", ".jpeg")))
    pattern = re.compile(r"_0*%d\.(png|jpe?g)$" % number, re.IGNORECASE)
    hits = [f for f in files if pattern.search(f)]
    if hits:
        return hits
    claimed = {f for f in files for k in range(1, len(files) + 1)
               if re.search(r"_0*%d\.(png|jpe?g)$" % k, f, re.IGNORECASE)}
    return [f for f in files if f not in claimed]


@register_dataset("anatomy")
def read_anatomy(root: PathLike) -> RatedDataset:
    """The 240 images and their annotated error counts.

    ``extra["errors"]`` is the number of marked errors (one per error category, body part and
    marked person group in a cell of the annotation table), averaged over the annotators who
    rated the image (one or two); ``extra["per_annotator"]`` keeps the individual counts.
    ``mos`` is None (the set has no MOS); the group is the prompt.
    """
    root = os.fspath(root)
    labels = os.path.join(root, "data", "annotations.csv")
    table = read_table(labels, delimiter=",")
    header = table.header
    needed = {"id": "Image Id", "model": "Model", "prompt": "Prompt", "num": "Pic Num."}
    idx = table.column_index(needed, required=tuple(needed))
    error_cols = [i for i, h in enumerate(header) if _CATEGORY.match(h)]
    if not error_cols:
        raise DatasetError(f"{labels}: no error columns ('1. Missing Error-...')", source=labels)
    log = ProblemLog(labels)
    counts: Dict[str, List[float]] = {}
    meta: Dict[str, Dict[str, str]] = {}
    for line, cells in table.rows:
        cells = cells + [""] * (len(header) - len(cells))
        iid = cells[idx["id"]].strip()
        n = sum(len([v for v in cells[i].split(",") if v.strip()]) for i in error_cols)
        counts.setdefault(iid, []).append(float(n))
        meta.setdefault(iid, {k: cells[j].strip() for k, j in idx.items()} | {"line": str(line)})
    samples: List[Sample] = []
    for iid, per in counts.items():
        m = meta[iid]
        folder = os.path.join(root, "images", _FOLDERS.get(m["model"].lower(), m["model"]),
                              m["prompt"].replace(" ", "_"))
        try:
            files = _image_file(folder, int(m["num"]))
        except (OSError, ValueError) as e:
            log.add(f"line {m['line']}", iid, f"no image ({type(e).__name__}: {e})")
            continue
        if len(files) != 1:
            log.add(f"line {m['line']}", iid, f"{len(files)} candidate images in {folder}")
            continue
        path = os.path.join(folder, files[0])
        samples.append(Sample(name=os.path.relpath(path, root).replace(os.sep, "/"), path=path, mos=None,
                              group=m["prompt"], extra={"errors": float(np.mean(per)), "per_annotator": per,
                                                        "generator": m["model"], "image_id": iid}))
    log.raise_if_any()
    return RatedDataset(name="anatomy", samples=samples, scale=(0.0, 1.0), licence=ANATOMY_LICENCE)
