"""The generic CSV reader (kind ``"csv"``) and the table-to-samples core the AGIN and PKU-I2IQA
readers share."""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ..labels import LABELS
from .base import (
    PathLike,
    ProblemLog,
    RatedDataset,
    Sample,
    apply_group_rule,
    check_duplicates,
    check_files,
    check_scale,
    parse_score,
    read_table,
    register_dataset,
    resolve_image,
)

#: our field names that a ``columns`` mapping may use
CSV_FIELDS = ("name", "mos", "mos_t", "mos_r", "group", "ref")
_SCORES = LABELS


def read_rated_table(
    labels: PathLike,
    image_dir: PathLike,
    columns: Mapping[str, str],
    scale: Tuple[float, float],
    *,
    name: str,
    ref_dir: Optional[PathLike] = None,
    delimiter: Optional[str] = None,
    required: Sequence[str] = ("name", "mos"),
    extra_scores: Optional[Mapping[str, str]] = None,
    keep_other_columns: bool = False,
    group_from_ref: bool = False,
    group_rule: Optional[str] = None,
    licence: Optional[str] = None,
) -> RatedDataset:
    """Samples from a label table.

    ``columns`` maps our fields (:data:`CSV_FIELDS`) to column names; ``extra_scores`` maps
    ``Sample.extra`` keys to further score columns (checked against ``scale`` like the MOS).
    Fields in ``required`` must have their column; other mapped columns are used when present.
    Every problem in the file is collected and raised as one :class:`DatasetError`.
    """
    unknown = sorted(set(columns) - set(CSV_FIELDS))
    if unknown:
        raise ValueError(f"columns: unknown field(s) {', '.join(map(repr, unknown))}; "
                         f"allowed: {', '.join(CSV_FIELDS)}")
    for fld in ("name", "mos"):
        if fld not in columns:
            raise ValueError(f"columns must map {fld!r} to a column name, got {dict(columns)!r}")
    scale = check_scale(scale)
    extra_scores = dict(extra_scores or {})
    table = read_table(labels, delimiter=delimiter)
    wanted = dict(columns)
    wanted.update({f"extra:{k}": v for k, v in extra_scores.items()})
    idx = table.column_index(wanted, required=[r if r in CSV_FIELDS else f"extra:{r}" for r in required])
    used = set(idx.values())
    others = [(i, h) for i, h in enumerate(table.header) if i not in used] if keep_other_columns else []
    ref_root = ref_dir if ref_dir is not None else image_dir

    log = ProblemLog(table.path)
    samples: List[Sample] = []
    seen: List[Tuple[str, str, str, Optional[str]]] = []
    width = len(table.header)
    for line, cells in table.rows:
        where = f"line {line}"
        if len(cells) > width:
            log.add(where, None, f"has {len(cells)} fields, the header has {width}")
            continue
        cells = cells + [""] * (width - len(cells))
        sname, path, problem = resolve_image(image_dir, cells[idx["name"]])
        row_ok = problem is None
        if problem:
            log.add(where, None, problem)
        values: Dict[str, Optional[float]] = {}
        for fld in _SCORES:
            if fld in idx:
                values[fld], problem = parse_score(cells[idx[fld]], table.header[idx[fld]], scale)
                if problem:
                    row_ok = False
                    log.add(where, sname, problem)
        extra: Dict[str, object] = {}
        for key in extra_scores:
            if f"extra:{key}" in idx:
                col = idx[f"extra:{key}"]
                extra[key], problem = parse_score(cells[col], table.header[col], scale)
                if problem:
                    row_ok = False
                    log.add(where, sname, problem)
        ref_path = group = None
        ref_name: Optional[str] = None
        if "ref" in idx and cells[idx["ref"]].strip():
            ref_name, ref_path, problem = resolve_image(ref_root, cells[idx["ref"]])
            if problem:
                row_ok = False
                log.add(where, sname, f"reference: {problem}")
            extra["ref_name"] = ref_name
            if group_from_ref:
                group = ref_name
        if "group" in idx and cells[idx["group"]].strip():
            group = cells[idx["group"]].strip()
        for i, h in others:
            extra[h] = cells[i]
        if sname is not None:   # even rows with bad scores get their files and names checked
            seen.append((where, sname, path, ref_path))
        if row_ok:
            samples.append(Sample(name=sname, path=path, mos=values["mos"], mos_t=values.get("mos_t"),
                                  mos_r=values.get("mos_r"), group=group, ref_path=ref_path, extra=extra))

    check_duplicates([e[1] for e in seen], [e[0] for e in seen], log)
    check_files(seen, log, image_dir)
    log.raise_if_any()
    if group_rule is not None:
        todo = [i for i, s in enumerate(samples) if s.group is None]
        groups = apply_group_rule([samples[i].name for i in todo], group_rule, source=table.path)
        for i, g in zip(todo, groups):
            samples[i].group = g
    return RatedDataset(name=name, samples=samples, scale=scale, licence=licence)


@register_dataset("csv")
def read_csv(
    labels: PathLike,
    image_dir: PathLike,
    columns: Dict[str, str],
    scale: Tuple[float, float],
    ref_dir: Optional[PathLike] = None,
    name: str = "csv",
    delimiter: Optional[str] = None,
    group_rule: Optional[str] = None,
) -> RatedDataset:
    """Any rated image set described by a CSV file.

    ``columns`` maps our field names to the file's column names: ``name`` (image file, relative to
    ``image_dir``) and ``mos`` are required; ``mos_t``, ``mos_r``, ``group`` (content group for
    splits) and ``ref`` (reference image, resolved under ``ref_dir``, default ``image_dir``) are
    optional, and must then exist in the file. ``scale`` is the native MOS range, used to check
    every score. ``delimiter=None`` sniffs ``, ; tab |``. ``group_rule`` (a regex with one
    capture group, searched in the image name) gives the content group of rows without one.
    """
    if not isinstance(columns, Mapping):
        raise ValueError(f"columns must be a mapping of field -> column name, got {columns!r}")
    return read_rated_table(labels, image_dir, columns, scale, name=name, ref_dir=ref_dir,
                            delimiter=delimiter, required=list(columns), group_rule=group_rule)
