"""Dataset-scale scoring: streaming sources -> a DataLoader that decodes in worker processes ->
the scorer -> score files that are appended to and can be resumed.

- :mod:`.sources`: files, folders, globs, ``--files-from`` lists, WebDataset tars, Parquet/CSV
  tables (:func:`open_inputs`), and deterministic shards (:func:`shard`).
- :mod:`.loader`: :class:`Sample` references and :func:`iter_batches` (``torch.utils.data``
  workers, input order, bounded prefetch; defined in :mod:`joint_core.preprocess.loader`, which
  ``NaturalnessScorer.score_iter`` is built on, so the scorer never imports this package), and
  how the cores are shared (:func:`plan_cpu`, defined in :mod:`joint_core.devices`).
- :mod:`.sinks`: CSV / JSONL / JSON / Parquet score files that survive a kill (:mod:`.records`,
  :mod:`.formats`, :mod:`.lock` beside it), read back by :func:`read_rows`.
- :mod:`.job`: :class:`ScoreJob`, which wires them and resumes; ``joint score`` only calls it.
- :mod:`.ray_engine`: the same sources and scorer in Ray Data actors (needs the ``ray`` extra;
  imported only when asked for, so this package imports without Ray or pyarrow).
"""

from .job import Outcome, Plan, ScoreJob, model_description, read_meta, result_from_rows, sort_output
from .loader import Sample, default_workers, iter_batches, load_sample
from .sinks import FORMATS, OutputError, Sink, read_rows, write_rows
from .sources import (Chain, FileList, InputError, Paths, Source, Table, TarShard, open_inputs, parse_shard,
                      shard)

__all__ = [
    "Chain", "FORMATS", "FileList", "InputError", "Outcome", "OutputError", "Paths", "Plan", "Sample",
    "ScoreJob", "Sink", "Source", "Table", "TarShard", "default_workers", "iter_batches", "load_sample",
    "model_description", "open_inputs", "parse_shard", "read_meta", "read_rows", "result_from_rows", "shard",
    "sort_output", "write_rows",
]
