"""The result of scoring and the one selection rule every face uses.

:class:`ScoreResult` holds the three scores of a batch in input order. :meth:`ScoreResult.keep` is
the only implementation of "rank, threshold, keep the best k, per group": the CLI (``--sort`` /
``--top``), the ComfyUI nodes (Filter, Best of N) and the diffusers hook (``best_of_n``, the
callback) all call it, so they cannot disagree.

Flagged images (``ScoreResult.warnings``: degenerate frames such as a black safety-checker output,
flat colour, pure noise, images too small to judge) hold real scores that mean nothing; every
selection ranks them after every unflagged image and no threshold lets them through.

A ranking key (``by``; see :mod:`joint_core.ranking`, its one home) is one axis name or a weighted
mix ``{axis: weight}``, read as ``sum(w * score) / sum(w)``. ``None`` means the model's own default
ranking (``JointConfig.ranking``), which the scorer stores on the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Hashable, Iterator, List, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

from .errors import ScoringError  # noqa: F401 - its old home; defined in errors.py
from .ranking import AXES, DEFAULT_BY, Axis, By, check_axis, check_by, check_weights, describe_by  # noqa: F401

def check_threshold(threshold: Any, arg: str = "threshold") -> Optional[float]:
    """A threshold on the score scale, or None; NaN, booleans and non-numbers are errors."""
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or math.isnan(threshold):
        raise ValueError(f"{arg} must be a number on the model's score scale (1-5) or None, got {threshold!r}")
    return float(threshold)


@dataclass
class ScoreResult:
    """Scores of a batch, in input order. Images that could not be scored hold NaN and have a
    message in ``errors`` (keyed by position). Images that were scored but whose score is not
    meaningful (degenerate: nearly uniform or black, pure noise, too small; or only partly
    scored) have a message in ``warnings`` (keyed by position) and rank last. ``default_by`` is
    the model's default ranking key, used where a ranking method is given ``by=None``."""

    technical: Tensor
    rationality: Tensor
    naturalness: Tensor
    sources: List[str]
    errors: Dict[int, str] = field(default_factory=dict)
    score_range: tuple = (1.0, 5.0)
    default_by: By = DEFAULT_BY
    warnings: Dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sources)

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        return iter(self.to_records())

    @property
    def ok(self) -> Tensor:
        """Bool mask of the images that were scored."""
        mask = torch.ones(len(self), dtype=torch.bool)
        for i in self.errors:
            mask[i] = False
        return mask

    @property
    def flagged(self) -> Tensor:
        """Bool mask of the images that were scored but flagged (``warnings``): they rank last."""
        mask = torch.zeros(len(self), dtype=torch.bool)
        for i in self.warnings:
            if i not in self.errors:
                mask[i] = True
        return mask

    def resolve_by(self, by: Optional[By] = None) -> Union[str, Dict[str, float]]:
        """``by`` checked, or the model's default ranking key when it is None."""
        return check_by(self.default_by if by is None else by)

    def scores(self, by: Optional[By] = None) -> Tensor:
        """One axis, or a weighted mix of axes ``{axis: weight}``: ``sum(w * score) / sum(w)``.
        ``None``: the model's default ranking key (``default_by``)."""
        by = self.resolve_by(by)
        if isinstance(by, Mapping):
            total = sum(by.values())
            mix = torch.zeros(len(self), dtype=torch.float64)
            for ax, w in by.items():
                mix += (w / total) * getattr(self, ax).double()
            return mix.float()
        return getattr(self, by)

    def to_records(self) -> List[Dict[str, Any]]:
        """One dict per image: index, source, the three scores (None when failed), error,
        warning (why a score ranks last, or None)."""
        out = []
        for i, src in enumerate(self.sources):
            rec: Dict[str, Any] = {"index": i, "source": src}
            for ax in AXES:
                v = float(getattr(self, ax)[i])
                rec[ax] = None if math.isnan(v) else v
            rec["error"] = self.errors.get(i)
            rec["warning"] = None if i in self.errors else self.warnings.get(i)
            out.append(rec)
        return out

    # -- selection: one rule -----------------------------------------------------------------

    def keep(self, by: Optional[By] = None, k: Optional[int] = None, threshold: Optional[float] = None,
             group_size: Optional[int] = None, sort: bool = False, descending: bool = True,
             groups: Optional[Sequence[Hashable]] = None, fraction: Optional[float] = None) -> List[int]:
        """Indices of the images to keep, in output order - the one selection rule of the project.

        The batch is cut into groups, each handled on its own, groups in order: consecutive runs of
        ``group_size`` (one group per prompt), or ``groups``, one label per image (the images
        sharing a label form a group, e.g. a sub-folder; groups come in the order of their first
        image). With neither, the whole batch is one group. In each group:

        - ``sort``, ``k`` or ``fraction``: the group is ordered by ``by``, best first (worst first
          when not ``descending``); ties keep input order; flagged images (``warnings``) come after
          all unflagged ones (ordered the same way among themselves), unscored images last.
          Otherwise input order.
        - ``threshold``: images whose ``by`` score is below it are dropped (the threshold is on the
          ``by`` scale; a mix is a weighted mean, so it stays on the 1-5 scale), and so are
          flagged images, whatever their score.
        - ``k``: at most the first ``k`` are kept. ``fraction`` (in (0, 1]): at most
          ``ceil(fraction * scored images of the group)`` (so a group with a scored image keeps at
          least one); with both, the smaller bound holds. Flagged images are kept only when fewer
          unflagged ones than that bound are left.
        - Whenever something can be dropped (``k``, ``fraction`` or ``threshold``), unscored images
          are dropped too; sorting alone keeps them, last.
        """
        n = len(self)
        if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, int)
                                       or group_size < 1):
            raise ValueError(f"group_size must be a positive integer or None, got {group_size!r}")
        if group_size is not None and groups is not None:
            raise ValueError("give group_size or groups, not both")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
            raise ValueError(f"k must be a non-negative integer or None, got {k!r}")
        if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
                                     or not 0.0 < fraction <= 1.0):
            raise ValueError(f"fraction must be a number in (0, 1] or None, got {fraction!r}")
        threshold = check_threshold(threshold)
        if groups is not None:
            if len(groups) != n:
                raise ValueError(f"groups has {len(groups)} labels for {n} images")
            by_label: Dict[Hashable, List[int]] = {}
            for i, label in enumerate(groups):
                by_label.setdefault(label, []).append(i)
            parts: List[Sequence[int]] = list(by_label.values())
        else:
            size = group_size or max(n, 1)
            if n % size:
                raise ValueError(f"{n} images cannot be split into groups of {size}")
            parts = [range(start, min(n, start + size)) for start in range(0, n, size)]
        values = self.scores(by).tolist()
        prune = k is not None or threshold is not None or fraction is not None
        kept: List[int] = []
        flagged = {i for i in self.warnings if i not in self.errors}
        for group in parts:
            scored = [i for i in group if i not in self.errors]
            failed = [i for i in group if i in self.errors]
            limit = k
            if fraction is not None:
                share = math.ceil(fraction * len(scored) - 1e-9)
                limit = share if limit is None else min(limit, share)
            if sort or limit is not None:
                sign = -1.0 if descending else 1.0
                # stable: ties keep input order; flagged after unflagged whatever the direction
                scored.sort(key=lambda i: (i in flagged, sign * values[i]))
                order = scored + ([] if prune else failed)
            else:
                order = [i for i in group if not (prune and i in self.errors)]
            if threshold is not None:
                order = [i for i in order if i not in flagged and values[i] >= threshold]
            if limit is not None:
                order = order[:limit]
            kept.extend(order)
        return kept

    def ranking(self, by: Optional[By] = None, descending: bool = True) -> List[int]:
        """Every index, best first (worst first unless ``descending``) by ``by``; flagged images
        come after the others, unscored images last. ``keep(by, sort=True)``."""
        return self.keep(by, sort=True, descending=descending)

    def best_indices(self, k: Optional[int] = None, by: Optional[By] = None,
                     descending: bool = True) -> List[int]:
        """Indices of scored images only, best first, at most ``k`` (all when None)."""
        return [i for i in self.keep(by, k=k, sort=True, descending=descending) if i not in self.errors]

    def select(self, indices: Sequence[int]) -> "ScoreResult":
        """A result holding only ``indices`` (in that order)."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        remap = {int(old): new for new, old in enumerate(idx.tolist())}
        return ScoreResult(
            technical=self.technical[idx], rationality=self.rationality[idx],
            naturalness=self.naturalness[idx], sources=[self.sources[i] for i in idx.tolist()],
            errors={remap[i]: m for i, m in self.errors.items() if i in remap},
            score_range=self.score_range, default_by=self.default_by,
            warnings={remap[i]: m for i, m in self.warnings.items() if i in remap})

    def top(self, k: int, by: Optional[By] = None) -> "ScoreResult":
        """The ``k`` best scored images, best first."""
        return self.select(self.best_indices(k, by))

    def summary(self) -> str:
        n_ok = len(self) - len(self.errors)
        n_flagged = int(self.flagged.sum())
        return (f"{n_ok}/{len(self)} images scored" + (f", {len(self.errors)} failed" if self.errors else "")
                + (f", {n_flagged} flagged (ranked last)" if n_flagged else ""))
