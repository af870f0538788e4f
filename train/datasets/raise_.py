"""RAISE (kind ``"raise"``): 600 images (480 generated, 120 real photographs) rated for realness
on 0-100, with an official 510/90 train/test split."""

from __future__ import annotations

import os
from typing import Dict, List, Tuple

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

RAISE_SCALE = (0.0, 100.0)
RAISE_LICENCE = "RAISE: non-commercial use only (see its README)"
RAISE_COLUMNS = {"name": "filename", "mos": "MOS_Rating", "zscore": "MOS_ZScore"}


@register_dataset("raise")
def read_raise(root: PathLike) -> RatedDataset:
    """RAISE from its ``dataset/`` folder (``images/{train,test}_images/``, ``ratings/{train,test}.csv``).

    Names are ``"<part>_images/<file>"`` (unique across the two parts). ``mos`` and ``mos_r`` are
    the realness MOS ``MOS_Rating`` (0-100, higher = more real); ``mos_t`` is None.
    ``extra`` holds ``zscore``, ``real_photo`` (file name starts with ``r``) and ``part``.
    ``official_split`` is ``{"train": [...], "test": [...]}`` in label-file order. The repository
    root (the folder that contains ``dataset/``) is accepted too.
    """
    root = os.fspath(root)
    if not os.path.isdir(os.path.join(root, "ratings")) and os.path.isdir(os.path.join(root, "dataset", "ratings")):
        root = os.path.join(root, "dataset")
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: RAISE folder not found", source=root)
    images = os.path.join(root, "images")
    samples: List[Sample] = []
    split: Dict[str, List[str]] = {}
    problems: List[str] = []
    seen: List[Tuple[str, str, str, None]] = []
    for part in ("train", "test"):
        labels = os.path.join(root, "ratings", f"{part}.csv")
        table = read_table(labels, delimiter=",")
        idx = table.column_index({k: v for k, v in RAISE_COLUMNS.items()}, required=("name", "mos", "zscore"))
        log = ProblemLog(labels)
        names: List[str] = []
        for line, cells in table.rows:
            where = f"{part}.csv line {line}"
            cells = cells + [""] * (len(table.header) - len(cells))
            file = cells[idx["name"]].strip()
            name, path, problem = resolve_image(images, f"{part}_images/{file}")
            if problem:
                log.add(where, file, problem)
                continue
            mos, p1 = parse_score(cells[idx["mos"]], "MOS_Rating", RAISE_SCALE)
            z, p2 = parse_score(cells[idx["zscore"]], "MOS_ZScore", (-1e6, 1e6))
            for problem in (p1, p2):
                if problem:
                    log.add(where, name, problem)
            seen.append((where, name, path, None))
            names.append(name)
            if p1 or p2:
                continue
            base = os.path.basename(file)
            samples.append(Sample(name=name, path=path, mos=mos, mos_r=mos,
                                  extra={"zscore": z, "real_photo": base.lower().startswith("r"), "part": part}))
        problems.extend(f"{labels}: {p}" for p in log.items)
        split[part] = names
    log = ProblemLog(root)
    check_duplicates([e[1] for e in seen], [e[0] for e in seen], log)
    check_files(seen, log, images)
    problems.extend(log.items)
    if problems:
        raise DatasetError.from_problems(root, problems)
    return RatedDataset(name="raise", samples=samples, scale=RAISE_SCALE, official_split=split,
                        licence=RAISE_LICENCE)
