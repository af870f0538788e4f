"""PKU-I2IQA and other AIGCIQA-style sets (kinds ``"pku-i2iqa"``, ``"aigciqa"``): generated images
rated for quality, authenticity and text/image correspondence, optionally with the reference
(prompt) image each was generated from. Used by the FR-AIGCIQA / NR-AIGCIQA baselines."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from .base import PathLike, RatedDataset, register_dataset
from .generic_csv import read_rated_table

#: default column names; ``columns`` overrides any of them. Keys: ``name`` (image file, relative
#: to ``image_dir``), ``mos`` (quality MOS), ``authenticity``, ``correspondence`` (their MOS),
#: ``ref`` (reference / prompt image file, relative to ``ref_dir``), ``group`` (content group).
PKU_COLUMNS: Dict[str, str] = {
    "name": "image",
    "mos": "quality",
    "authenticity": "authenticity",
    "correspondence": "correspondence",
    "ref": "reference",
}
_FIELDS = ("name", "mos", "ref", "group")
_EXTRA = ("authenticity", "correspondence")


@register_dataset("aigciqa")
@register_dataset("pku-i2iqa")
def read_pku_i2iqa(
    labels: PathLike,
    image_dir: PathLike,
    ref_dir: Optional[PathLike] = None,
    columns: Optional[Dict[str, str]] = None,
    scale: Tuple[float, float] = (0.0, 100.0),
    name: str = "pku-i2iqa",
    delimiter: Optional[str] = None,
    target: str = "quality",
) -> RatedDataset:
    """A PKU-I2IQA / AIGCIQA-style label CSV (export a spreadsheet to CSV first).

    Default columns (:data:`PKU_COLUMNS`, matched case-insensitively): ``image``, ``quality``,
    ``authenticity``, ``correspondence``, ``reference``. ``image`` and ``quality`` are required;
    the others are used when the file has them, and are required when named in ``columns``.
    ``mos`` is the quality MOS (``mos_t``/``mos_r`` stay None); ``extra["authenticity"]`` and
    ``extra["correspondence"]`` hold the other two MOS, ``extra["ref_name"]`` the reference name.
    ``ref_path`` resolves the reference under ``ref_dir`` (default ``image_dir``). Images made from
    the same reference share its content, so the reference name is their ``group`` (unless a
    ``group`` column is mapped). ``scale`` is the MOS range of every score column, default
    ``(0, 100)`` (PKU-I2IQA and AIGCIQA2023 publish 0-100 MOS; pass e.g. ``(1, 5)`` for others).
    ``target`` (``quality``, ``authenticity`` or ``correspondence``) picks the MOS that becomes
    ``mos``, the one models train on and are tested against (the baselines are trained once per
    perspective); the other two are kept in ``extra``.
    """
    perspectives = ("quality", "authenticity", "correspondence")
    if target not in perspectives:
        raise ValueError(f"target must be one of {', '.join(perspectives)}, got {target!r}")
    cols = dict(PKU_COLUMNS)
    explicit = dict(columns or {})
    unknown = sorted(set(explicit) - set(PKU_COLUMNS) - {"group"})
    if unknown:
        raise ValueError(f"columns: unknown key(s) {', '.join(map(repr, unknown))}; "
                         f"allowed: {', '.join(list(PKU_COLUMNS) + ['group'])}")
    cols.update(explicit)
    required = ["name", "mos"] + [k for k in explicit if k not in ("name", "mos")]
    score_cols = {"quality": cols["mos"], **{k: cols[k] for k in _EXTRA}}
    cols["mos"] = score_cols.pop(target)
    if target != "quality":  # the target's column is now required, quality's is optional extra
        required = [k for k in required if k != target] + (["quality"] if "mos" in explicit else [])
    return read_rated_table(
        labels, image_dir,
        {k: v for k, v in cols.items() if k in _FIELDS},
        scale, name=name, ref_dir=ref_dir, delimiter=delimiter, required=required,
        extra_scores=score_cols,
        group_from_ref=True,
        licence="see the licence of the PKU-I2IQA / AIGCIQA release you downloaded",
    )
