"""Experiments built on the one training loop: fit, cross-validation, ablations, baselines.

* ``fit``: one split.
* ``cv``: every split of the recipe (5 by default); mean and standard deviation per metric.
* ``ablate``: the variants of the paper's Tables 4-6, each a named override of the recipe
  (:data:`ABLATIONS`, plus the recipe's own ``variants``). Variants that only change the fusion
  weights (Table 5) do not change training - the fusion is not in the loss - so they re-score
  the base run's checkpoint instead of training again.
* ``baselines``: single-backbone regressors and PKU-I2IQA's NR-AIGCIQA / FR-AIGCIQA through the
  same loop, one model per rated perspective ("retrained using the score of each perspective").

Each writes a Markdown table in the paper's layout beside the runs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from . import metrics as M
from .data import n_splits, prepare_data
from .labels import AXIS_OF_LABEL, LABEL_OF_AXIS, LABELS
from .loop import RunResult, finish, run
from .report import read_predictions
from .recipe import Recipe, RecipeError
from .tasks import build_task

# name -> overrides (paper Tables 4-6). "joint" is the recipe itself.
ABLATIONS: Dict[str, Dict[str, Any]] = {
    "joint": {},
    "w/o localization": {"model": {"config": {"preprocess": {"technical": {"localizer": "none"}}}}},
    "w/o regularization": {"loss": {"use_wsd": False}},
    "w/o multi-perspective": {"model": {"config": {"preprocess": {"technical": {"partition": False}}}}},
    "S_T only": {"model": {"config": {"fusion": {"technical_weight": 1.0, "rationality_weight": 0.0}}}},
    "S_R only": {"model": {"config": {"fusion": {"technical_weight": 0.0, "rationality_weight": 1.0}}}},
    "S_T + S_R (no weighting)": {"model": {"config": {"fusion": {"technical_weight": 1.0, "rationality_weight": 1.0}}}},
    "L_IS": {"loss": {"objective": "is"}},
    "L_FS": {"loss": {"objective": "fs"}},
    "L_FS + L_IS (JOINT++)": {"loss": {"objective": "joint++"}},
}

# PKU-I2IQA baselines and the paper's single-backbone rows (timm names)
BASELINE_BACKBONES = ["vgg16", "vgg19", "resnet18", "resnet50", "inception_v4", "swin_tiny_patch4_window7_224"]


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name).strip("-").lower() or "run"


def fit(recipe: Recipe, out_dir: Path, split: int = 0, **kw: Any) -> RunResult:
    return run(recipe, out_dir, split_index=split, **kw)


def cv(recipe: Recipe, out_dir: Path, splits: Optional[Sequence[int]] = None, **kw: Any) -> Dict[str, Any]:
    splits = list(range(n_splits(recipe))) if splits is None else list(splits)
    results = [run(recipe, out_dir / f"split-{i}", split_index=i, **kw) for i in splits]
    summary = _aggregate([r.test for r in results])
    rows = {recipe.name: _mean_rows(summary)}
    table = "\n\n".join(f"### {ds}\n\n" + M.paper_table({k: v[ds] for k, v in rows.items() if ds in v},
                                                        metrics=("srcc", "plcc"))
                        for ds in summary)
    (out_dir / "cv.md").write_text(f"# {recipe.name}: {len(splits)} splits (mean ± std)\n\n{table}\n")
    (out_dir / "cv.json").write_text(json.dumps({"splits": splits, "test": summary}, indent=2, default=float))
    return {"splits": splits, "test": summary}


def _aggregate(tests: List[Dict[str, Any]]) -> Dict[str, Dict[str, Dict[str, List[float]]]]:
    """``{dataset: {axis: {metric: [value per split]}}}``."""
    out: Dict[str, Dict[str, Dict[str, List[float]]]] = {}
    for t in tests:
        for ds, axes in t.items():
            for axis, m in axes.items():
                for k in ("srcc", "plcc", "plcc_raw", "krcc", "rmse"):
                    if k in m:
                        out.setdefault(ds, {}).setdefault(axis, {}).setdefault(k, []).append(float(m[k]))
    return out


def _mean_rows(summary):
    return {ds: {axis: {k: v for k, v in m.items()} for axis, m in axes.items()} for ds, axes in summary.items()}


def _only_fusion(overrides: Dict[str, Any]) -> bool:
    return set(overrides) == {"model"} and set(overrides["model"]) == {"config"} \
        and set(overrides["model"]["config"]) == {"fusion"}


def ablate(recipe: Recipe, out_dir: Path, variants: Optional[Sequence[str]] = None, split: int = 0,
           **kw: Any) -> Dict[str, Any]:
    table = _ablation_table(recipe)
    names = list(variants) if variants else list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise RecipeError(f"unknown ablation variant(s) {unknown}; known: {list(table)}")
    results: Dict[str, Dict[str, Any]] = {}
    base_dir = out_dir / "joint"
    data = None
    for name in names:
        overrides = table[name]
        variant = recipe.with_overrides(overrides, name=f"{recipe.name} [{name}]")
        vdir = out_dir / _slug(name)
        if name != "joint" and _only_fusion(overrides):
            data = data or prepare_data(recipe, split, cache_root=kw.get("cache_root"), progress=False)
            # the base checkpoint is reused only if it was trained on this very split
            if "joint" not in results and not ((base_dir / "model").is_dir()
                                               and data.matches_saved_splits(base_dir / "splits")):
                results["joint"] = run(recipe, base_dir, split_index=split, data=data, **kw).test
            rescore_with_fusion(variant, base_dir, vdir, data, localizer=kw.get("localizer"))
            results[name] = predictor_vs_perspectives(vdir / "predictions.csv")
            continue
        if name == "joint" and name in results:
            continue
        results[name] = run(variant, vdir, split_index=split, **kw).test
    if any(_is_fused_row(n, table) for n in results):
        results[WEIGHTED] = predictor_vs_perspectives(base_dir / "predictions.csv")
    _write_sections(out_dir / "ablation.md", recipe.name, _ablation_sections(results, table))
    return results


def _ablation_table(recipe: Recipe) -> Dict[str, Dict[str, Any]]:
    table = dict(ABLATIONS)
    table.update(recipe.variants)
    return table


def _is_fused_row(name: str, table: Dict[str, Dict[str, Any]]) -> bool:
    return name == WEIGHTED or (name != "joint" and name in table and _only_fusion(table[name]))


def _ablation_sections(results: Dict[str, Any], table: Dict[str, Dict[str, Any]], suffix: str = "test"):
    main = {k: v for k, v in results.items() if not _is_fused_row(k, table)}
    fused = {k: v for k, v in results.items() if _is_fused_row(k, table)}
    sections = [(f"ablations ({suffix})", main, None)] if main else []
    if fused:
        if WEIGHTED in fused:
            fused[WEIGHTED] = fused.pop(WEIGHTED)  # the recipe's own weighting last, as in the paper
        sections.append((f"the fused prediction against each perspective's MOS ({suffix}; paper Table 5)",
                         fused, FUSED_NOTE))
    return sections


def over_splits(experiment: str, recipe: Recipe, out_dir: Path, splits: Sequence[int], **kw: Any) -> Dict[str, Any]:
    """Run ``ablate`` or ``baselines`` on each split (in ``out_dir/split-<i>``) and write the
    mean ± std over the splits beside them, as the paper reports Tables 3-6."""
    fn = {"ablate": ablate, "baselines": baselines}[experiment]
    per = [fn(recipe, out_dir / f"split-{i}", split=i, **kw) for i in splits]
    rows = {name: _aggregate([p[name] for p in per if name in p]) for name in per[0]}
    suffix = f"test, mean ± std over splits {', '.join(map(str, splits))}"
    if experiment == "ablate":
        sections = _ablation_sections(rows, _ablation_table(recipe), suffix)
        name = "ablation.md"
    else:
        sections, name = [(f"baselines ({suffix})", rows, None)], "baselines.md"
    _write_sections(out_dir / name, recipe.name, sections)
    (out_dir / name.replace(".md", ".json")).write_text(json.dumps({"splits": list(splits), "test": rows},
                                                                   indent=2, default=float))
    return rows


WEIGHTED = "S_T ⊕ S_R (subjective weighting)"
FUSED_NOTE = ("Each row is one predictor, the model's naturalness output under that fusion "
              "(S_T alone, S_R alone, their plain sum, the recipe's weighting), correlated with the "
              "technical, rationality and naturalness MOS, as in the paper's Table 5.")


def predictor_vs_perspectives(predictions_csv: Path) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """``{dataset: {axis: metrics}}`` of a run's *naturalness* prediction against the MOS of
    every perspective (paper Table 5: one predictor per row, three MOS columns)."""
    names, preds, labels = read_predictions(predictions_csv)
    out: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for ds in dict.fromkeys(names.tolist()):
        m = names == ds
        per_axis = {}
        for axis, label in LABEL_OF_AXIS.items():
            p, y = preds["naturalness"][m], labels[label][m]
            ok = ~np.isnan(p) & ~np.isnan(y)
            if ok.sum() >= 3:
                per_axis[axis] = M.evaluate(p[ok], y[ok])
        if per_axis:
            out[ds] = {a: per_axis[a] for a in ("technical", "rationality", "naturalness") if a in per_axis}
    return out


def rescore_with_fusion(variant: Recipe, base_dir: Path, out_dir: Path, data, localizer=None) -> RunResult:
    """Copy the base run's checkpoint, set the variant's fusion, and score val/test."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / "model").exists():
        shutil.rmtree(out_dir / "model")
    shutil.copytree(base_dir / "model", out_dir / "model")
    cfg_path = out_dir / "model" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["fusion"] = variant.joint_config().to_dict()["fusion"]
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    task = build_task(variant, localizer=localizer)
    history = json.loads((base_dir / "metrics.json").read_text()).get("history", []) \
        if (base_dir / "metrics.json").is_file() else []
    best = json.loads((base_dir / "metrics.json").read_text()).get("best_epoch") \
        if (base_dir / "metrics.json").is_file() else None
    return finish(variant.with_overrides({"train": {"fit_fusion": None}}), task, data, out_dir, best, history)


def baselines(recipe: Recipe, out_dir: Path, backbones: Optional[Sequence[str]] = None,
              kinds: Sequence[str] = ("regressor",), targets: Optional[Sequence[str]] = None,
              init: str = "timm", split: int = 0, **kw: Any) -> Dict[str, Any]:
    backbones = list(backbones or BASELINE_BACKBONES)
    data = prepare_data(recipe, split, cache_root=kw.get("cache_root"), progress=False)
    present = _labels_present(data)
    targets = [t for t in (targets or LABELS) if t in present]
    if not targets:
        raise RecipeError("no rated perspective found in the data")
    has_refs = any(it.sample.ref_path for it in data.items("train"))
    results: Dict[str, Dict[str, Any]] = {}
    for kind in kinds:
        if kind == "fr-regressor" and not has_refs:
            raise RecipeError("fr-regressor (FR-AIGCIQA) needs reference images: use a data set with a ref column")
        for backbone in backbones:
            label = {"regressor": "NR", "fr-regressor": "FR"}[kind] + f"-{backbone}"
            merged: Dict[str, Any] = {}
            for target in targets:
                axis = AXIS_OF_LABEL[target]
                variant = recipe.with_overrides({
                    "model": {"kind": kind, "backbone": backbone, "target": target,
                              "init": {"backbone": init}},
                    "train": {"select": [f"{axis}.srcc"], "fit_fusion": None},
                }, name=f"{label} [{axis}]")
                res = run(variant, out_dir / _slug(label) / target, split_index=split, data=data, **kw)
                for ds, axes in res.test.items():
                    merged.setdefault(ds, {}).update(axes)
            results[label] = merged
    _write_sections(out_dir / "baselines.md", recipe.name, [("baselines (test)", results, None)])
    return results


def _labels_present(data) -> List[str]:
    items = data.items("train")
    return [lab for lab in LABELS
            if any(getattr(it.sample, lab) is not None and not np.isnan(getattr(it.sample, lab)) for it in items)]


def _write_sections(path: Path, title: str, sections) -> None:
    """``sections``: ``(heading or None, {row: {dataset: {axis: metrics}}}, note or None)``."""
    parts = [f"# {title}", ""]
    for heading, results, note in sections:
        if heading:
            parts += [f"## {heading}", ""]
        if note:
            parts += [note, ""]
        for ds in dict.fromkeys(ds for r in results.values() for ds in r):
            rows = {name: r[ds] for name, r in results.items() if ds in r}
            parts += [f"{'###' if heading else '##'} {ds}", "", M.paper_table(rows, metrics=("srcc", "plcc")), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
