"""Model selection: which epoch (or which epoch per branch) a run exports, judged on the
validation sets only (never the test sets)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from joint_core.checkpoint import WEIGHTS_NAME, read_weights


def selection_score(val: Dict[str, Dict[str, Dict[str, Any]]], select: Sequence[str]) -> float:
    """Mean of the selected metrics: ``axis.metric`` (averaged over data sets that have it) or
    ``dataset/axis.metric``."""
    values = []
    for key in select:
        ds, _, rest = key.rpartition("/")
        axis, _, metric = rest.partition(".")
        sets = [ds] if ds else list(val)
        vals = [val[d][axis][metric] for d in sets if d in val and axis in val[d]]
        vals = [v for v in vals if v is not None and not math.isnan(v)]
        if vals:
            values.append(float(np.mean(vals)))
    return float(np.mean(values)) if values else float("-inf")


class Selector:
    """Keeps the best model seen on validation.

    By default the whole model, by the mean of ``train.select``. With ``train.select_branches``
    each branch is kept from the epoch that was best on its own metrics (e.g. the technical
    branch by CLIVE, the rationality branch by RAISE, when each learns from its own data set)
    and the exported model combines them. Epochs count like the log: 0 is the linear probe.
    """

    def __init__(self, select: List[str], per_branch: Dict[str, List[str]]):
        self.select = select
        self.per_branch = dict(per_branch)
        self.best, self.best_epoch = float("-inf"), None
        self.branch_best = {b: float("-inf") for b in self.per_branch}
        self.branch_epoch: Dict[str, Optional[int]] = {b: None for b in self.per_branch}
        self.snapshots: Dict[str, Dict[str, torch.Tensor]] = {}

    def update(self, val: Dict[str, Any], epoch: int, model: torch.nn.Module) -> Tuple[float, bool]:
        """Record an evaluation; returns the ``select`` score and whether the export changed."""
        score = selection_score(val, self.select)
        if not self.per_branch:
            if score > self.best:
                self.best, self.best_epoch = score, epoch
                return score, True
            return score, False
        changed = False
        for branch, keys in self.per_branch.items():
            s = selection_score(val, keys)
            if s > self.branch_best[branch]:
                self.branch_best[branch], self.branch_epoch[branch] = s, epoch
                self.snapshots[branch] = {k: v.detach().cpu().clone()
                                          for k, v in getattr(model, branch).state_dict().items()}
                changed = True
        if changed:
            self.best, self.best_epoch = score, epoch
        return score, changed

    def export(self, task, folder: Path) -> None:
        """Export the selected model (the current one, or the best branches combined)."""
        if not self.snapshots:
            task.export(folder)
            return
        current = {b: {k: v.detach().clone() for k, v in getattr(task.model, b).state_dict().items()}
                   for b in self.snapshots}
        try:
            for b, state in self.snapshots.items():
                getattr(task.model, b).load_state_dict(state)
            task.export(folder)
        finally:
            for b, state in current.items():
                getattr(task.model, b).load_state_dict(state)

    def restore(self, folder: Path, model: torch.nn.Module, state: Dict[str, Any]) -> None:
        """Resume: the records from ``state`` and the branch snapshots from the exported model."""
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.branch_best.update(state.get("branch_best", {}))
        self.branch_epoch.update(state.get("branch_epoch", {}))
        if self.per_branch and (folder / WEIGHTS_NAME).is_file():
            exported = read_weights(folder / WEIGHTS_NAME)
            self.snapshots = {b: {k[len(b) + 1:]: v for k, v in exported.items() if k.startswith(b + ".")}
                              for b in self.per_branch if self.branch_epoch.get(b) is not None}

    def state(self) -> Dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "branch_best": self.branch_best,
                "branch_epoch": self.branch_epoch}

    def report(self) -> Any:
        """The selected epoch, or ``{branch: epoch}`` with per-branch selection."""
        return dict(self.branch_epoch) if self.per_branch else self.best_epoch

    def describe(self, score: float) -> str:
        if not self.per_branch:
            return f"val {'+'.join(self.select)} {score:.4f}"
        return "val " + ", ".join(f"{b} {'+'.join(k)} {self.branch_best[b]:.4f} (epoch {self.branch_epoch[b]})"
                                  for b, k in self.per_branch.items())
