"""The AGIN database (kind ``"agin"``): naturalness, technical and rationality MOS on a 1-5 scale."""

from __future__ import annotations

from typing import Optional

from .base import PathLike, RatedDataset, register_dataset
from .generic_csv import read_rated_table

#: our field -> the column of the AGIN label file
AGIN_COLUMNS = {"name": "filename", "mos": "MOS_nat", "mos_t": "MOS_tech", "mos_r": "MOS_rat"}
AGIN_SCALE = (1.0, 5.0)
AGIN_LICENCE = "AGIN: see the licence terms of https://github.com/zijianchen98/AGIN"


@register_dataset("agin")
def read_agin(labels: PathLike, image_dir: PathLike, group_rule: Optional[str] = None,
              group_column: Optional[str] = None) -> RatedDataset:
    r"""AGIN from its label CSV (``filename, MOS_nat, MOS_tech, MOS_rat``) and the flat image folder.

    ``mos`` is the naturalness MOS, ``mos_t`` the technical and ``mos_r`` the rationality MOS, all
    on 1-5. Any further columns are kept as strings in ``Sample.extra``. The content group that
    content-disjoint splits keep together comes from ``group_column`` (a column of the label
    file naming each image's content) or ``group_rule`` (a regex with one capture group,
    searched in the file name). Pick the rule from what the files share: ``r"_(\d+)\."`` puts
    ``CoCosNet_23.png`` and ``SPADE_23.png`` together (one source index across generators), while
    ``r"^([^_]+)_"`` groups by generator, which makes a cross-generator protocol instead. Without
    either, every image is its own group (and the split warns).
    """
    columns = dict(AGIN_COLUMNS)
    if group_column:
        columns["group"] = group_column
    return read_rated_table(labels, image_dir, columns, AGIN_SCALE, name="agin",
                            required=tuple(columns), keep_other_columns=True,
                            group_rule=group_rule, licence=AGIN_LICENCE)
