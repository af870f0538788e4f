"""What a run writes for people: ``metrics.json``, ``predictions.csv``, ``results.md`` in the
paper's table layout, and the plots (training curves, predicted-vs-MOS scatter)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from joint_core.result import AXES

from . import metrics as M
from .data import Item, labels_of
from .labels import LABEL_OF_AXIS, LABELS


def compact(val: Dict[str, Dict[str, Dict[str, Any]]]) -> Dict[str, Dict[str, Dict[str, float]]]:
    return {d: {a: {k: m[k] for k in ("srcc", "plcc", "krcc", "rmse") if k in m} for a, m in axes.items()}
            for d, axes in val.items()}


def jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if math.isnan(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    return obj


def write_yaml(path: Path, data: Dict[str, Any]) -> None:
    import yaml

    path.write_text(yaml.safe_dump(jsonable(data), sort_keys=False), encoding="utf-8")


def write_predictions(path: Path, items: Sequence[Item], preds: Dict[str, np.ndarray]) -> None:
    labels = labels_of(items)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "name", *AXES, *LABELS])
        for i, it in enumerate(items):
            w.writerow([it.dataset, it.sample.name] + [_fmt(preds[a][i]) for a in AXES]
                       + [_fmt(labels[k][i]) for k in LABELS])


def _fmt(v: float) -> str:
    return "" if v is None or math.isnan(v) else f"{v:.6f}"


def results_markdown(name: str, test: Dict[str, Any], val: Dict[str, Any]) -> str:
    lines = [f"# {name}", ""]
    for title, block in (("Test", test), ("Validation (model selection)", val)):
        if not block:
            continue
        lines += [f"## {title}", ""]
        rows = {f"{name} ({ds})": axes for ds, axes in block.items()}
        lines += [M.paper_table(rows, metrics=("srcc", "plcc", "krcc")), ""]
        for ds, axes in block.items():
            for axis, m in axes.items():
                if "srcc_ci" in m:
                    lines.append(f"- {ds} {axis}: SRCC {m['srcc']:.4f} [{m['srcc_ci'][0]:.3f}, {m['srcc_ci'][1]:.3f}], "
                                 f"PLCC {m['plcc']:.4f} [{m['plcc_ci'][0]:.3f}, {m['plcc_ci'][1]:.3f}] "
                                 f"(95 % bootstrap, n = {m['n']})")
        lines.append("")
    return "\n".join(lines)


def plot_curves(history: List[Dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(ep, [h["train_loss"] for h in history], marker="o")
    ax[0].set(xlabel="epoch", ylabel="training loss")
    ax[1].plot(ep, [h["val_select"] for h in history], marker="o", color="tab:green")
    ax[1].set(xlabel="epoch", ylabel="validation selection metric")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_scatter(preds: Dict[str, np.ndarray], items: Sequence[Item], path: Path) -> None:
    labels = {k: np.asarray(v, dtype=float) for k, v in labels_of(items).items()}
    _scatter(np.asarray([it.dataset for it in items]), preds, labels, path)


def read_predictions(csv_path: Path) -> Tuple[np.ndarray, Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """A run's ``predictions.csv``: data-set names, ``{axis: predictions}``, ``{label: MOS}``
    (NaN where empty)."""
    with Path(csv_path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise FileNotFoundError(f"{csv_path}: no predictions")
    col = lambda k: np.asarray([float(r[k]) if r[k] != "" else np.nan for r in rows])  # noqa: E731
    return (np.asarray([r["dataset"] for r in rows]), {a: col(a) for a in AXES},
            {k: col(k) for k in LABELS})


def plot_predictions(csv_path: Path, path: Path) -> None:
    """Predicted-vs-MOS scatter plots from a run's ``predictions.csv`` (format by ``path``'s
    suffix: ``.png``, ``.svg``, ``.pdf``)."""
    _scatter(*read_predictions(csv_path), path)


def _scatter(names: np.ndarray, preds: Dict[str, np.ndarray], labels: Dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for ds in dict.fromkeys(names.tolist()):
        for axis in AXES:
            m = names == ds
            p, y = preds[axis][m], labels[LABEL_OF_AXIS[axis]][m]
            ok = ~np.isnan(p) & ~np.isnan(y)
            if ok.sum() >= 3:
                panels.append((ds, axis, p[ok], y[ok]))
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    for ax, (ds, axis, p, y) in zip(axes[0], panels):
        ax.scatter(p, y, s=10, alpha=0.7)
        ax.set(xlabel=f"predicted {axis}", ylabel="MOS", title=f"{ds}: SRCC {M.srcc(p, y):.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110, **({"metadata": {"Date": None}} if str(path).endswith(".svg") else {}))
    plt.close(fig)
