"""The human ratings a training image can carry, and the score axis each one rates.

One vocabulary for the data readers, the losses, the loop, the reports and the experiments:
``mos`` rates overall naturalness, ``mos_t`` the technical perspective, ``mos_r`` rationality
(the AGIN paper's three MOS). Score axes are :data:`joint_core.result.AXES`.
"""

from __future__ import annotations

from typing import Dict, Tuple

LABELS: Tuple[str, ...] = ("mos", "mos_t", "mos_r")
AXIS_OF_LABEL: Dict[str, str] = {"mos": "naturalness", "mos_t": "technical", "mos_r": "rationality"}
LABEL_OF_AXIS: Dict[str, str] = {axis: label for label, axis in AXIS_OF_LABEL.items()}
