"""Rated image data sets for training and evaluation.

``load_dataset(kind, **kwargs)`` reads one with the reader registered as ``kind``:

========================  ====================================================================
kind                      reader
========================  ====================================================================
``agin``                  :func:`read_agin` - AGIN label CSV + image folder (1-5)
``csv``                   :func:`read_csv` - any CSV, columns mapped by the caller
``raise``                 :func:`read_raise` - RAISE ``dataset/`` folder (0-100, official split)
``clive``                 :func:`read_clive` - LIVE Challenge ``ChallengeDB_release/`` (0-100)
``pku-i2iqa``/``aigciqa`` :func:`read_pku_i2iqa` - PKU-I2IQA / AIGCIQA-style CSV (0-100)
``agiqa3k``               :func:`read_agiqa3k` - AGIQA-3K ``data/`` folder (0-5, prompt groups)
``degenerate``            :func:`make_degenerate` - synthetic broken frames anchored at the bottom
``anatomy``               :func:`read_anatomy` - ai-human-images error counts (evaluation only)
========================  ====================================================================

New readers register themselves with ``@register_dataset("kind")``.
"""

from .agiqa import read_agiqa3k
from .anatomy import read_anatomy
from .base import (
    DATASET_KINDS,
    DatasetError,
    RatedDataset,
    Sample,
    apply_group_rule,
    load_dataset,
    register_dataset,
)
from .agin import read_agin
from .clive import read_clive
from .degenerate import make_degenerate
from .generic_csv import read_csv
from .pku import read_pku_i2iqa
from .raise_ import read_raise

__all__ = [
    "DATASET_KINDS",
    "DatasetError",
    "RatedDataset",
    "Sample",
    "apply_group_rule",
    "load_dataset",
    "make_degenerate",
    "read_agin",
    "read_agiqa3k",
    "read_anatomy",
    "read_clive",
    "read_csv",
    "read_pku_i2iqa",
    "read_raise",
    "register_dataset",
]
