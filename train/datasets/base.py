"""Rated image data sets: the sample and data-set types, the reader registry, and the helpers
every reader shares (label-table parsing, image-path resolution, validation).

Readers never open images: they check that the files exist and that the ratings are sane, and
they report every problem they find at once in one :class:`DatasetError`.
"""

from __future__ import annotations

import csv
import inspect
import io
import math
import os
import posixpath
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from joint_core.errors import JointError

from ..labels import LABELS

PathLike = Union[str, "os.PathLike[str]"]

#: how many problems a DatasetError message lists before "... and N more"
MAX_LISTED_PROBLEMS = 20


# --------------------------------------------------------------------------------------------
# types
# --------------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One rated image. MOS values are on the native scale of their data set."""

    name: str                      # unique key (file name relative to the image root, posix)
    path: str                      # absolute image path
    mos: float                     # overall / naturalness MOS, native scale of the set
    mos_t: Optional[float] = None  # technical MOS
    mos_r: Optional[float] = None  # rationality MOS
    group: Optional[str] = None    # content group for content-disjoint splits
    ref_path: Optional[str] = None  # reference (prompt) image, image-to-image sets
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class RatedDataset:
    """A list of rated samples with their native MOS scale and, where published, the official split."""

    name: str
    samples: List[Sample]
    scale: Tuple[float, float]                 # native MOS range, e.g. (1, 5) or (0, 100)
    official_split: Optional[Dict[str, List[str]]] = None
    licence: Optional[str] = None              # a short licence note / path to the notice
    distinct_content: bool = False             # known: no two images show the same content

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __getitem__(self, key: Union[int, str]) -> Sample:
        """A sample by position or by name."""
        if isinstance(key, str):
            index = self._index().get(key)
            if index is None:
                raise KeyError(f"{self.name}: no sample named {key!r}")
            return self.samples[index]
        return self.samples[key]

    def _index(self) -> Dict[str, int]:
        return {s.name: i for i, s in enumerate(self.samples)}

    def names(self) -> List[str]:
        return [s.name for s in self.samples]

    def subset(self, names: Sequence[str]) -> "RatedDataset":
        """The samples called ``names``, in that order. Unknown names raise one KeyError listing them.

        The official split, if any, is restricted to the names kept.
        """
        if isinstance(names, str):
            raise TypeError("subset() takes a sequence of names, not a single string")
        index = self._index()
        unknown = [n for n in names if n not in index]
        if unknown:
            raise KeyError(f"{self.name}: {len(unknown)} unknown sample name(s): "
                           + _listing([repr(n) for n in unknown]))
        kept = set(names)
        split = None
        if self.official_split is not None:
            split = {k: [n for n in v if n in kept] for k, v in self.official_split.items()}
        return replace(self, samples=[self.samples[index[n]] for n in names], official_split=split)

    def rescaled(self, target: Tuple[float, float] = (1.0, 5.0)) -> "RatedDataset":
        """A copy with ``mos``, ``mos_t`` and ``mos_r`` mapped linearly from ``self.scale`` to ``target``.

        ``Sample.extra`` is copied unchanged (its values stay on the native scale).
        """
        s0, s1 = check_scale(self.scale, "scale")
        t0, t1 = check_scale(target, "target")
        gain = (t1 - t0) / (s1 - s0)

        def f(v: Optional[float]) -> Optional[float]:
            return None if v is None else t0 + (float(v) - s0) * gain

        samples = [replace(s, mos=f(s.mos), mos_t=f(s.mos_t), mos_r=f(s.mos_r), extra=dict(s.extra))
                   for s in self.samples]
        return replace(self, samples=samples, scale=(t0, t1))

    def arrays(self) -> Dict[str, np.ndarray]:
        """``{"mos", "mos_t", "mos_r"}`` as float64 arrays in sample order, NaN where a value is None."""
        out = {}
        for key in LABELS:
            vals = [getattr(s, key) for s in self.samples]
            out[key] = np.array([np.nan if v is None else float(v) for v in vals], dtype=np.float64)
        return out


class DatasetError(JointError, ValueError):
    """A data set that cannot be used as it is.

    The message names the file and lists the offending rows (``line N``, the sample name and the
    problem), at most :data:`MAX_LISTED_PROBLEMS` of them, then ``... and N more``. The full list
    is in ``.problems`` and the file in ``.source``.
    """

    def __init__(self, message: str, problems: Optional[Sequence[str]] = None,
                 source: Optional[str] = None):
        super().__init__(message)
        self.problems = list(problems or [])
        self.source = source

    @classmethod
    def from_problems(cls, source: str, problems: Sequence[str], limit: int = MAX_LISTED_PROBLEMS,
                      header: Optional[str] = None) -> "DatasetError":
        n = len(problems)
        head = header or f"{n} problem{'s' if n != 1 else ''}"
        lines = [f"{source}: {head}:"] + [f"  {p}" for p in problems[:limit]]
        if n > limit:
            lines.append(f"  ... and {n - limit} more")
        return cls("\n".join(lines), problems=problems, source=source)


class DatasetArgumentError(DatasetError, TypeError):
    """A reader was given an argument it does not take (a recipe typo, usually)."""


def _listing(items: Sequence[str], limit: int = MAX_LISTED_PROBLEMS) -> str:
    text = ", ".join(items[:limit])
    if len(items) > limit:
        text += f", ... and {len(items) - limit} more"
    return text


class ProblemLog:
    """Collects problems while a reader walks its rows; :meth:`raise_if_any` reports them together."""

    def __init__(self, source: PathLike):
        self.source = str(source)
        self.items: List[str] = []
        self._summaries = 0

    def add(self, where: Optional[str], name: Optional[str], problem: str) -> None:
        """Record a problem; one with neither ``where`` nor ``name`` is a summary and is listed first."""
        parts = [p for p in (where, repr(name) if name is not None else None) if p]
        if parts:
            self.items.append(", ".join(parts) + ": " + problem)
        else:
            self.items.insert(self._summaries, problem)
            self._summaries += 1

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise DatasetError.from_problems(self.source, self.items)


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------

_READERS: Dict[str, Callable[..., RatedDataset]] = {}
#: the registered data-set kinds, in registration order
DATASET_KINDS: List[str] = []


def register_dataset(kind: str) -> Callable[[Callable[..., RatedDataset]], Callable[..., RatedDataset]]:
    """Decorator registering a reader function under ``kind`` (case-insensitive) for :func:`load_dataset`."""
    key = kind.lower()

    def deco(fn: Callable[..., RatedDataset]) -> Callable[..., RatedDataset]:
        if key in _READERS and _READERS[key] is not fn:
            raise ValueError(f"data-set kind {key!r} is already registered to {_READERS[key].__name__}")
        if key not in _READERS:
            DATASET_KINDS.append(key)
        _READERS[key] = fn
        return fn

    return deco


def load_dataset(kind: str, **kwargs: Any) -> RatedDataset:
    """Read a data set with the reader registered as ``kind``, passing ``kwargs`` on.

    Unknown kinds raise :class:`DatasetError` naming the known ones; arguments the reader does not
    take raise ``TypeError`` showing its signature.
    """
    fn = _READERS.get(str(kind).lower())
    if fn is None:
        raise DatasetError(f"unknown data-set kind {kind!r}; known kinds: {', '.join(DATASET_KINDS)}")
    sig = inspect.signature(fn)
    params = sig.parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unexpected = [k for k in kwargs if k not in params]
        if unexpected:
            raise DatasetArgumentError(f"load_dataset({kind!r}): unexpected argument(s) "
                                       f"{', '.join(map(repr, unexpected))}; {fn.__name__} takes {sig}")
    try:
        sig.bind(**kwargs)
    except TypeError as exc:
        raise TypeError(f"load_dataset({kind!r}): {exc}; {fn.__name__} takes {sig}") from None
    return fn(**kwargs)


# --------------------------------------------------------------------------------------------
# shared helpers for readers
# --------------------------------------------------------------------------------------------


def check_scale(scale: Any, argument: str = "scale") -> Tuple[float, float]:
    """``scale`` as a ``(lo, hi)`` float tuple with finite ``lo < hi`` (lists from YAML accepted)."""
    try:
        lo, hi = (float(v) for v in scale)
    except (TypeError, ValueError):
        raise ValueError(f"{argument} must be two numbers (lo, hi), got {scale!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{argument} must be finite with lo < hi, got {scale!r}")
    return lo, hi


def parse_score(text: Any, column: str, scale: Tuple[float, float]) -> Tuple[Optional[float], Optional[str]]:
    """``(value, None)`` for a finite number inside ``scale``, else ``(None, problem)``."""
    if isinstance(text, str):
        raw = text.strip()
        if not raw:
            return None, f"{column} is empty"
        try:
            value = float(raw)
        except ValueError:
            return None, f"{column} is not a number ({raw!r})"
    else:
        try:
            value = float(text)
        except (TypeError, ValueError):
            return None, f"{column} is not a number ({text!r})"
    if math.isnan(value):
        return None, f"{column} is NaN"
    lo, hi = scale
    tol = 1e-9 * (hi - lo)
    if not (lo - tol <= value <= hi + tol):
        return None, f"{column} = {value:g} is outside the scale [{lo:g}, {hi:g}]"
    return value, None


def resolve_image(root: PathLike, raw: str) -> Tuple[Optional[str], Optional[str], Optional[str]]:
    """``(name, absolute path, problem)`` for a file name from a label table.

    The name is the posix path relative to ``root`` (backslashes become ``/``, ``./`` dropped).
    Absolute paths are accepted when they lie under ``root``.
    """
    text = str(raw).strip().replace("\\", "/")
    if not text:
        return None, None, "empty file name"
    root_abs = os.path.abspath(os.fspath(root))
    if posixpath.isabs(text) or re.match(r"^[A-Za-z]:/", text):
        full = os.path.abspath(text)
        rel = os.path.relpath(full, root_abs)
        if rel == os.pardir or rel.startswith(os.pardir + os.sep):
            return None, None, f"absolute path {text!r} is outside the image folder {root_abs}"
        name = Path(rel).as_posix()
    else:
        name = posixpath.normpath(text)
    return name, os.path.join(root_abs, *name.split("/")), None


def check_files(entries: Sequence[Tuple[str, str, str, Optional[str]]], log: ProblemLog,
                image_root: PathLike) -> None:
    """Report missing images and references; ``entries`` are ``(where, name, path, ref_path)``.

    A missing image folder, or one holding none of the images, gets one summary line first.
    """
    missing = [e for e in entries if not os.path.isfile(e[2])]
    root = os.path.abspath(os.fspath(image_root))
    if not os.path.isdir(root):
        log.add(None, None, f"image folder not found: {root}")
    elif entries and len(missing) == len(entries):
        log.add(None, None, f"none of the {len(entries)} images exists under {root} (wrong image folder?)")
    for where, name, path, _ in missing:
        log.add(where, name, f"image not found: {path}")
    for where, name, _, ref_path in entries:
        if ref_path is not None and not os.path.isfile(ref_path):
            log.add(where, name, f"reference image not found: {ref_path}")


def check_duplicates(names: Sequence[Optional[str]], wheres: Sequence[str], log: ProblemLog) -> None:
    first: Dict[str, str] = {}
    for name, where in zip(names, wheres):
        if name is None:
            continue
        if name in first:
            log.add(where, name, f"duplicate name (first at {first[name]})")
        else:
            first[name] = where


def apply_group_rule(names: Sequence[str], rule: str, source: str = "group_rule") -> List[str]:
    """The text captured by the regex ``rule`` (exactly one capture group, ``re.search``) in each name.

    Names the rule does not match raise one :class:`DatasetError` listing them.
    """
    try:
        pattern = re.compile(rule)
    except re.error as exc:
        raise ValueError(f"group_rule {rule!r} is not a valid regular expression: {exc}") from None
    if pattern.groups != 1:
        raise ValueError(f"group_rule {rule!r} must have exactly one capture group, it has {pattern.groups}")
    groups: List[str] = []
    unmatched: List[str] = []
    for name in names:
        m = pattern.search(name)
        if m is None or m.group(1) is None:
            unmatched.append(name)
        else:
            groups.append(m.group(1))
    if unmatched:
        raise DatasetError.from_problems(
            source, [f"{n!r}: not matched by group_rule {rule!r}" for n in unmatched])
    return groups


# --------------------------------------------------------------------------------------------
# label tables
# --------------------------------------------------------------------------------------------


@dataclass
class Table:
    """A parsed CSV label file: stripped header and ``(line number, cells)`` rows (blank rows skipped)."""

    path: str
    header: List[str]
    rows: List[Tuple[int, List[str]]]
    delimiter: str

    def column_index(self, wanted: Dict[str, str], required: Sequence[str]) -> Dict[str, int]:
        """Map field -> column index for the columns named in ``wanted`` (field -> column name).

        Names match exactly, else case-insensitively when that is unambiguous. Missing required
        columns (and fields mapped to a column that appears twice) raise one :class:`DatasetError`.
        """
        out: Dict[str, int] = {}
        missing: List[str] = []
        problems: List[str] = []
        lower: Dict[str, List[int]] = {}
        for i, h in enumerate(self.header):
            lower.setdefault(h.lower(), []).append(i)
        for fld, col in wanted.items():
            exact = [i for i, h in enumerate(self.header) if h == col]
            hits = exact or lower.get(col.lower(), [])
            if len(hits) == 1:
                out[fld] = hits[0]
            elif len(hits) > 1:
                problems.append(f"column {col!r} (for {fld.split(':', 1)[-1]}) appears {len(hits)} times in the header")
            elif fld in required:
                missing.append(f"{col!r} (for {fld.split(':', 1)[-1]})")
        if missing:
            problems.insert(0, f"missing required column{'s' if len(missing) > 1 else ''} "
                               f"{', '.join(missing)}; columns found: {', '.join(map(repr, self.header))}")
        if problems:
            raise DatasetError(f"{self.path}: " + "; ".join(problems), problems=problems, source=self.path)
        return out


def read_table(path: PathLike, delimiter: Optional[str] = None) -> Table:
    """Read a CSV label file. ``delimiter=None`` sniffs one of ``, ; tab |`` (default ``,``).

    Any file that cannot be read as CSV text raises :class:`DatasetError` naming it; so does an
    empty file or one with a header but no data rows.
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise DatasetError(f"{p}: label file not found", source=p)
    if os.path.isdir(p):
        raise DatasetError(f"{p}: is a folder, expected a CSV label file", source=p)
    try:
        with open(p, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise DatasetError(f"{p}: cannot be read ({exc})", source=p) from None
    if data[:4] == b"PK\x03\x04" or data[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
        raise DatasetError(f"{p}: is a spreadsheet/archive, not CSV text (export it as CSV)", source=p)
    if b"\x00" in data[:65536]:
        raise DatasetError(f"{p}: is a binary file, not CSV text", source=p)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    if not text.strip():
        raise DatasetError(f"{p}: empty file", source=p)
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: List[Tuple[int, List[str]]] = []
    header: Optional[List[str]] = None
    try:
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            if header is None:
                header = [c.strip() for c in cells]
            else:
                rows.append((reader.line_num, cells))
    except csv.Error as exc:
        raise DatasetError(f"{p}: not valid CSV (line {reader.line_num}: {exc})", source=p) from None
    if header is None:
        raise DatasetError(f"{p}: empty file", source=p)
    if not rows:
        raise DatasetError(f"{p}: has a header ({', '.join(header)}) but no data rows", source=p)
    return Table(path=p, header=header, rows=rows, delimiter=delimiter)
