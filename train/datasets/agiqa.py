"""AGIQA-3K (kind ``"agiqa3k"``): 2,982 AI-generated images of 300 prompts, each rated for
perceptual quality and for text alignment (0-5)."""

from __future__ import annotations

import os
from typing import List, Sequence, Tuple

from ..labels import LABELS
from .base import (
    DatasetError,
    PathLike,
    ProblemLog,
    RatedDataset,
    Sample,
    check_duplicates,
    check_files,
    parse_score,
    read_table,
    register_dataset,
    resolve_image,
)

AGIQA_SCALE = (0.0, 5.0)
AGIQA_LICENCE = "AGIQA-3K: MIT licence (github lcysyzxdxc/AGIQA-3k-Database, mirrored in qiyan111/AIGC)"
_TARGETS = {"quality": "mos_quality", "alignment": "mos_align"}


@register_dataset("agiqa3k")
def read_agiqa3k(root: PathLike, target: str = "quality",
                 labels: Sequence[str] = ("mos", "mos_t")) -> RatedDataset:
    """AGIQA-3K from a folder holding ``data.csv`` and ``ACGIQA-3K/`` (the ``data/`` folder of
    github ``qiyan111/AIGC``; the repository root is accepted too).

    ``target`` picks the rating that becomes the MOS: ``quality`` (``mos_quality``, perceptual
    quality, the technical perspective) or ``alignment`` (``mos_align``). ``labels`` says which
    label kinds carry it (default ``mos`` and ``mos_t``; add ``mos_r`` to make it a rationality
    target too). The content group is the prompt (about 10 images of one prompt, one per
    generator setting), so splits are prompt-disjoint. ``extra`` holds ``generator`` (the file
    name's prefix), both ratings and their standard deviations.
    """
    if target not in _TARGETS:
        raise ValueError(f"target must be one of {sorted(_TARGETS)}, got {target!r}")
    bad = [lab for lab in labels if lab not in LABELS]
    if bad or not labels:
        raise ValueError(f"labels must be a non-empty subset of {list(LABELS)}, got {list(labels)}")
    root = os.fspath(root)
    if not os.path.isfile(os.path.join(root, "data.csv")) and os.path.isfile(os.path.join(root, "data", "data.csv")):
        root = os.path.join(root, "data")
    labels_csv = os.path.join(root, "data.csv")
    images = os.path.join(root, "ACGIQA-3K")
    if not os.path.isfile(labels_csv):
        raise DatasetError(f"{root}: no data.csv (expected the data/ folder of the AGIQA-3K repository)",
                           source=root)
    table = read_table(labels_csv, delimiter=",")
    cols = {"name": "name", "prompt": "prompt", "quality": "mos_quality", "std_quality": "std_quality",
            "alignment": "mos_align", "std_align": "std_align"}
    idx = table.column_index(cols, required=("name", "prompt", "quality", "alignment"))
    log = ProblemLog(labels_csv)
    samples: List[Sample] = []
    seen: List[Tuple[str, str, str, None]] = []
    for line, cells in table.rows:
        where = f"line {line}"
        cells = cells + [""] * (len(table.header) - len(cells))
        file = cells[idx["name"]].strip()
        name, path, problem = resolve_image(images, file)
        if problem:
            log.add(where, file, problem)
            continue
        seen.append((where, name, path, None))
        prompt = cells[idx["prompt"]].strip()
        if not prompt:
            log.add(where, name, "prompt is empty")
        scores = {}
        for key in ("quality", "alignment"):
            value, problem = parse_score(cells[idx[key]], cols[key], AGIQA_SCALE)
            if problem:
                log.add(where, name, problem)
            scores[key] = value
        if any(v is None for v in scores.values()) or not prompt:
            continue
        extra = {"generator": file.rsplit("_", 1)[0], "prompt": prompt, "quality": scores["quality"],
                 "alignment": scores["alignment"]}
        for key in ("std_quality", "std_align"):
            if key in idx and cells[idx[key]].strip():
                try:
                    extra[key] = float(cells[idx[key]])
                except ValueError:
                    log.add(where, name, f"{cols[key]} is not a number ({cells[idx[key]]!r})")
        mos = scores[target]
        samples.append(Sample(name=name, path=path, mos=mos if "mos" in labels else None,
                              mos_t=mos if "mos_t" in labels else None,
                              mos_r=mos if "mos_r" in labels else None, group=prompt, extra=extra))
    check_duplicates([e[1] for e in seen], [e[0] for e in seen], log)
    check_files(seen, log, images)
    log.raise_if_any()
    return RatedDataset(name="agiqa3k", samples=samples, scale=AGIQA_SCALE, licence=AGIQA_LICENCE)
