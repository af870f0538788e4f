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
def read_agin(labels: PathLike, image_dir: PathLike, group_rule: Optional[str] = None) -> RatedDataset:
    """AGIN from its label CSV (``filename, MOS_nat, MOS_tech, MOS_rat``) and the flat image folder.

    ``mos`` is the naturalness MOS, ``mos_t`` the technical and ``mos_r`` the rationality MOS, all
    on 1-5. Any further columns are kept as strings in ``Sample.extra``. ``group_rule`` (a regex
    with one capture group, searched in the file name) sets the content group used by
    content-disjoint splits, e.g. ``r"^([^_]+)_"`` groups ``CoCosNet_23.png`` by generator;
    without it every image is its own group.
    """
    return read_rated_table(labels, image_dir, AGIN_COLUMNS, AGIN_SCALE, name="agin",
                            required=tuple(AGIN_COLUMNS), keep_other_columns=True,
                            group_rule=group_rule, licence=AGIN_LICENCE)
