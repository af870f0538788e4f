"""Every model on every rated set: the cross-data-set table, best-of-N agreement and the
anatomical-error check, by one command and one code path.

    python -m train crosseval --config default-model --var ... --models default,runs/x/joint/model \\
        [--anatomy /data/ai-human-images] --out runs/crosseval

The recipe gives the data sets and their splits (the same code and seeds as training, so a
model is never scored on images it was trained on when it was trained by that recipe); each
model scores the *test* part of every rated set through :class:`joint_core.NaturalnessScorer`,
from the image files, as a user would. Every axis (technical, rationality, naturalness) and the
model's default ranking (``JointConfig.ranking``) is correlated with the set's own rating, so
the table shows what generalises beyond the set an axis was trained on. Sets whose images have
content groups with several images (AGIQA-3K's prompts) also get the within-group, best-of-N
metrics (:func:`train.metrics.within_groups`). The anatomical-error set (no MOS) is scored
against minus the number of annotated errors.

Predictions are kept in ``<out>/<model>/<set>.csv``, so a rerun only scores what is new.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from . import metrics as M
from .data import load_data, make_split
from .datasets import RatedDataset, load_dataset
from .recipe import Recipe, RecipeError
from .report import jsonable

AXES = ("technical", "rationality", "naturalness")
RANKING = "ranking"
ANATOMY = "anatomy"


@dataclass
class EvalSet:
    """The test images of one set and what they are compared with."""

    name: str
    names: List[str]
    paths: List[str]
    target: np.ndarray                  # higher = better (for anatomy: minus the error count)
    groups: Optional[List[str]]         # content groups with several images, or None
    what: str                           # what the target is, for the tables
    extra: Dict[str, np.ndarray]


def _target(ds: RatedDataset) -> np.ndarray:
    """The set's own rating: the first of mos, mos_t, mos_r that a sample has."""
    out = []
    for s in ds.samples:
        v = next((x for x in (s.mos, s.mos_t, s.mos_r) if x is not None), None)
        out.append(math.nan if v is None else float(v))
    return np.asarray(out, dtype=np.float64)


def eval_sets(recipe: Recipe, split: int = 0, anatomy: Optional[str] = None) -> List[EvalSet]:
    """The test part of every data set of ``recipe`` that has one (its own split, seeded as in
    training), plus the anatomical-error set when ``anatomy`` names its folder."""
    out: List[EvalSet] = []
    for data_spec in recipe.data:
        ds = load_data(replace(data_spec, drop_labels=[]))   # all labels: the set's own rating is the target
        sp = make_split(data_spec, ds, split, recipe.seed)
        if not sp.test:
            continue
        sub = ds.subset(sp.test)
        target = _target(sub)
        if not np.isfinite(target).any():
            continue
        groups = [s.group for s in sub.samples]
        grouped = all(g is not None for g in groups) and len(set(groups)) < len(groups)
        out.append(EvalSet(data_spec.name, sub.names(), [s.path for s in sub.samples], target,
                           groups if grouped else None, f"{data_spec.name} MOS", {}))
    if anatomy:
        ds = load_dataset(ANATOMY, root=anatomy)
        errors = np.asarray([s.extra["errors"] for s in ds.samples], dtype=np.float64)
        out.append(EvalSet(ANATOMY, ds.names(), [s.path for s in ds.samples], -errors,
                           [s.group for s in ds.samples], "minus the annotated errors", {"errors": errors}))
    return out


def _model_label(name: str) -> str:
    p = Path(name)
    if name == "default":
        return "default"
    parts = [x for x in p.parts if x not in ("model", ".")]
    return "/".join(parts[-2:]) if parts else name


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text).strip("-").lower() or "model"


def score_set(scorer: Callable[[], Any], es: EvalSet, folder: Path, batch_size: int = 16,
              progress: bool = False) -> Dict[str, np.ndarray]:
    """The model's three axes and its default ranking on ``es`` (cached in ``folder``;
    ``scorer()`` gives the model's scorer when something must be scored)."""
    cache = folder / f"{es.name}.csv"
    if cache.is_file():
        with cache.open(newline="") as f:
            rows = {r["name"]: r for r in csv.DictReader(f)}
        if all(n in rows for n in es.names):
            return {k: np.asarray([float(rows[n][k]) for n in es.names]) for k in AXES + (RANKING,)}
    res = scorer().score(es.paths, batch_size=batch_size, progress=progress, on_error="raise")
    preds = {a: getattr(res, a).double().numpy() for a in AXES}
    preds[RANKING] = res.scores(None).double().numpy()   # the model's default ranking key
    folder.mkdir(parents=True, exist_ok=True)
    with cache.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name"] + list(AXES) + [RANKING])
        for i, n in enumerate(es.names):
            # repr: exact, so a rerun reads the very numbers it wrote
            w.writerow([n] + [repr(float(preds[k][i])) for k in AXES + (RANKING,)])
    return preds


def describe_ranking(model: str) -> str:
    from joint_core.checkpoint import load_model, resolve_model
    from joint_core.result import describe_by

    cfg = load_model(resolve_model(model).path).config
    return describe_by(cfg.ranking)


def evaluate_set(preds: Dict[str, np.ndarray], es: EvalSet, bootstrap: int, seed: int) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key in AXES + (RANKING,):
        res: Dict[str, Any] = {"pooled": M.evaluate(preds[key], es.target, bootstrap=bootstrap, seed=seed)}
        if es.groups is not None:
            res["within"] = M.within_groups(preds[key], es.target, es.groups, bootstrap=bootstrap, seed=seed)
        if es.name == ANATOMY:
            errors = es.extra["errors"]
            res["auc_no_error"] = M.roc_auc(preds[key], errors == 0)
            res["n_no_error"] = int((errors == 0).sum())
            res["auc_median"] = M.roc_auc(preds[key][errors != np.median(errors)],
                                          (errors < np.median(errors))[errors != np.median(errors)])
            res["median_errors"] = float(np.median(errors))
        out[key] = res
    return out


def crosseval(recipe: Recipe, models: Sequence[str], out_dir: Path, anatomy: Optional[str] = None,
              split: int = 0, bootstrap: int = 1000, batch_size: int = 16, device: str = "cpu",
              labels: Optional[Sequence[str]] = None, progress: bool = True) -> Dict[str, Any]:
    """Score every model on every set, write ``crosseval.md`` and ``crosseval.json``."""
    if not models:
        raise RecipeError("crosseval: name at least one model (--models default,runs/.../model)")
    labels = list(labels) if labels else [_model_label(m) for m in models]
    if len(labels) != len(models) or len(set(labels)) != len(labels):
        raise RecipeError(f"crosseval: --names must give one distinct name per model, got {labels}")
    sets = eval_sets(recipe, split, anatomy)
    results: Dict[str, Any] = {"recipe": recipe.name, "split": split, "bootstrap": bootstrap,
                               "sets": {es.name: {"n": len(es.names), "target": es.what,
                                                  "groups": len(set(es.groups)) if es.groups else None}
                                        for es in sets},
                               "models": {}}
    from joint_core import NaturalnessScorer

    for model, label in zip(models, labels):
        entry: Dict[str, Any] = {"spec": model, "ranking": describe_ranking(model), "sets": {}}
        loaded: List[Any] = []

        def scorer(model: str = model, loaded: List[Any] = loaded) -> Any:
            if not loaded:
                loaded.append(NaturalnessScorer.from_pretrained(model, device=device, dtype="float32"))
            return loaded[0]

        for es in sets:
            if progress:
                print(f"crosseval: {label} on {es.name} ({len(es.names)} images)", flush=True)
            preds = score_set(scorer, es, out_dir / _slug(label), batch_size=batch_size)
            entry["sets"][es.name] = evaluate_set(preds, es, bootstrap, recipe.seed)
        results["models"][label] = entry
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "crosseval.json").write_text(json.dumps(jsonable(results), indent=2))
    (out_dir / "crosseval.md").write_text(markdown(results))
    return results


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------


def _ci(m: Dict[str, Any], key: str, digits: int = 3) -> str:
    v = m.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    ci = m.get(f"{key}_ci")
    if ci and all(c is not None and math.isfinite(c) for c in ci):
        return f"{v:.{digits}f} <sub>[{ci[0]:.2f}, {ci[1]:.2f}]</sub>"
    return f"{v:.{digits}f}"


def markdown(results: Dict[str, Any]) -> str:
    sets = results["sets"]
    lines = [f"# Cross-data-set evaluation ({results['recipe']}, split {results['split']})", ""]
    lines.append("Test parts only: " + "; ".join(
        f"{n} ({s['n']} images" + (f", {s['groups']} groups" if s["groups"] else "") + f"; target: {s['target']})"
        for n, s in sets.items()) + f". SRCC with 95 % bootstrap intervals ({results['bootstrap']} resamples).")
    lines.append("")
    header = ["model", "score"] + [n for n in sets]
    lines += ["## SRCC of every score on every set", "",
              "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, entry in results["models"].items():
        for key in AXES + (RANKING,):
            name = f"ranking ({entry['ranking']})" if key == RANKING else key
            cells = [label, name] + [_ci(entry["sets"][n][key]["pooled"], "srcc") if n in entry["sets"] else "-"
                                     for n in sets]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for n, s in sets.items():
        if not s["groups"]:
            continue
        lines += [f"## Best-of-N on {n} ({s['groups']} groups)", "",
                  "| model | score | top pick (chance) | top pick / chance | pairwise | within SRCC | "
                  "pooled SRCC | PLCC | KRCC |", "|---|---|---|---|---|---|---|---|---|"]
        for label, entry in results["models"].items():
            for key in AXES + (RANKING,):
                r = entry["sets"][n][key]
                w, p = r["within"], r["pooled"]
                name = f"ranking ({entry['ranking']})" if key == RANKING else key
                lines.append(f"| {label} | {name} | {_ci(w, 'top_pick')} ({w['chance']:.3f}) | "
                             f"{_ci(w, 'top_pick_ratio', 2)} | {_ci(w, 'pairwise')} | {_ci(w, 'within_srcc')} | "
                             f"{_ci(p, 'srcc')} | {_ci(p, 'plcc')} | {_ci(p, 'krcc')} |")
        lines.append("")
    if ANATOMY in sets:
        lines += ["## Anatomical errors (ai-human-images)", "",
                  "SRCC with minus the mean number of annotated errors (positive: fewer errors score higher); "
                  "AUC of the images without any annotated error against the rest, and of the images below "
                  "the median error count against those above it.", "",
                  "| model | score | SRCC | within-prompt SRCC | AUC no error (n) | AUC below/above median |",
                  "|---|---|---|---|---|---|"]
        for label, entry in results["models"].items():
            for key in AXES + (RANKING,):
                r = entry["sets"][ANATOMY][key]
                name = f"ranking ({entry['ranking']})" if key == RANKING else key
                lines.append(f"| {label} | {name} | {_ci(r['pooled'], 'srcc')} | {_ci(r['within'], 'within_srcc')} | "
                             f"{_fmt(r['auc_no_error'])} ({r['n_no_error']}) | {_fmt(r['auc_median'])} "
                             f"(median {r['median_errors']:g}) |")
        lines.append("")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"
