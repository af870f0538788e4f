"""The training loop: one recipe, one split -> a checkpoint, metrics, tables and plots.

Runs on CPU, one GPU (mixed precision) or many (``accelerate launch``, no code change). Each
epoch is validated; the best epoch on the validation sets (never the test sets) is exported in
``joint_core``'s format. ``--resume`` continues from the last finished epoch. At the end the
exported model is loaded back with :class:`joint_core.NaturalnessScorer` and scores the test
sets: the reported test numbers are what users of the checkpoint get.

Output folder::

    recipe.yaml          the exact recipe (after variables and overrides)
    splits/<set>.json    the split of every data set
    model/               best checkpoint (config.json + model.safetensors)
    last/                resume state (weights, optimizer, scheduler, history and the random
                         generators' states: a resumed run draws the same batches and
                         augmentations as one that was never interrupted)
    metrics.json         per-epoch history, best epoch, validation and test metrics
    predictions.csv      test predictions next to the MOS
    results.md           the test metrics in the paper's table layout
    curves.png, scatter.png
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from joint_core.devices import pick_device
from joint_core.result import AXES

from . import metrics as M
from .data import Item, TrainingData, labels_of, loader, prepare_data
from .recipe import Recipe, RecipeError
from .tasks import JointTask, build_task, is_frozen

LABEL_OF_AXIS = {"naturalness": "mos", "technical": "mos_t", "rationality": "mos_r"}


@dataclass
class RunResult:
    out_dir: Path
    best_epoch: Any   # 0 = the linear probe; {branch: epoch} with per-branch selection
    val: Dict[str, Any]
    test: Dict[str, Any]
    history: List[Dict[str, Any]]


# --------------------------------------------------------------------------------------------
# evaluation helpers
# --------------------------------------------------------------------------------------------


def predict_items(task, items: Sequence[Item], data: TrainingData, batch_size: int,
                  accelerator=None) -> Dict[str, np.ndarray]:
    """Scoring-time predictions for ``items`` in order (NaN for axes the task does not predict)."""
    task.model.eval()
    out: Dict[str, List[float]] = {a: [] for a in AXES}
    dl = loader(items, data.cache, batch_size, shuffle=False, seed=0)
    for batch in dl:
        pred = task.predict(batch)
        for a in AXES:
            v = pred.get(a)
            out[a].extend(v.float().cpu().tolist() if v is not None else [math.nan] * len(batch))
    return {a: np.asarray(v, dtype=np.float64) for a, v in out.items()}


def evaluate_items(preds: Dict[str, np.ndarray], items: Sequence[Item], bootstrap: int = 0,
                   seed: int = 0) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """``{dataset: {axis: metrics}}`` for every axis that has both predictions and labels."""
    labels = {k: np.asarray(v) for k, v in labels_of(items).items()}
    names = np.asarray([it.dataset for it in items])
    result: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for ds in dict.fromkeys(names.tolist()):
        mask = names == ds
        per_axis = {}
        for axis in AXES:
            p, y = preds[axis][mask], labels[LABEL_OF_AXIS[axis]][mask]
            ok = ~np.isnan(p) & ~np.isnan(y)
            if ok.sum() >= 3:
                per_axis[axis] = M.evaluate(p[ok], y[ok], bootstrap=bootstrap, seed=seed)
        if per_axis:
            result[ds] = per_axis
    return result


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


def fit_fusion(task: JointTask, data: TrainingData, dataset, batch_size: int) -> Dict[str, float]:
    """Least-squares ``N = w_T*T + w_R*R + b`` on the training part of ``dataset`` (a name, or a
    list of names: then each set weighs the same in the fit, whatever its size); stored in the
    model's config so the exported checkpoint carries it."""
    names = [dataset] if isinstance(dataset, str) else list(dataset)
    items = [it for it in data.items("train") if it.dataset in names]
    preds = predict_items(task, items, data, batch_size)
    y = np.asarray(labels_of(items)["mos"])
    ok = ~np.isnan(y)
    for name in names:
        if not any(ok[i] for i, it in enumerate(items) if it.dataset == name):
            raise ValueError(f"fit_fusion: data set {name!r} has no overall MOS in its training part")
    sets = np.asarray([it.dataset for it in items])[ok]
    weight = np.sqrt(np.asarray([1.0 / np.sum(sets == d) for d in sets]))
    X = np.stack([preds["technical"][ok], preds["rationality"][ok], np.ones(int(ok.sum()))], 1)
    (w_t, w_r, b), *_ = np.linalg.lstsq(X * weight[:, None], y[ok] * weight, rcond=None)
    f = task.model.config.fusion
    f.technical_weight, f.rationality_weight, f.bias = float(w_t), float(w_r), float(b)
    return {"technical_weight": f.technical_weight, "rationality_weight": f.rationality_weight, "bias": f.bias}


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------


def _optimizer(task, spec):
    backbone, head = task.parameter_groups(spec.freeze)
    groups = [{"params": backbone, "lr": spec.lr}, {"params": head, "lr": spec.head_lr or spec.lr}]
    groups = [g for g in groups if g["params"]]
    cls = torch.optim.AdamW if spec.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, weight_decay=spec.weight_decay)


def _scheduler(opt, spec, steps_per_epoch: int):
    total = max(1, spec.epochs * steps_per_epoch)
    warm = spec.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        epoch = step // max(1, steps_per_epoch)
        if spec.scheduler == "step":
            return spec.gamma ** (epoch // spec.step_size)
        if spec.scheduler == "cosine":
            t = (step - warm) / max(1, total - warm)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


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
        if self.per_branch and (folder / "config.json").is_file():
            from joint_core.checkpoint import load_model

            exported = load_model(folder)
            self.snapshots = {b: getattr(exported, b).state_dict() for b in self.per_branch
                              if self.branch_epoch.get(b) is not None}

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


def _keep_frozen_in_eval(model: torch.nn.Module, frozen: Sequence[str]) -> None:
    """Frozen parts (``train.freeze``) stay in eval mode while the rest trains, so that their
    batch-norm statistics and dropout do not change either: frozen means unchanged."""
    for name, module in model.named_modules():
        if name and is_frozen(name, frozen):
            module.eval()


def _generators(dl: torch.utils.data.DataLoader) -> List[torch.Generator]:
    """The random generators that decide a loader's batch order (its own, its sampler's, its
    batch sampler's), each once. Accelerate's prepared loader shares these objects."""
    found: List[torch.Generator] = []
    for owner in (dl, dl.sampler, dl.batch_sampler, getattr(dl.batch_sampler, "sampler", None)):
        g = getattr(owner, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not f for f in found):
            found.append(g)
    return found


def _rng_state(loader_generators: Sequence[torch.Generator]) -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "loader": [g.get_state() for g in loader_generators]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: Optional[Dict[str, Any]], loader_generators: Sequence[torch.Generator]) -> bool:
    """Put the generators back where the interrupted run left them; False for a resume state
    written before they were saved (or by a loader of another shape)."""
    if not state or len(state.get("loader", [])) != len(loader_generators):
        return False
    torch.set_rng_state(state["torch"])
    for g, s in zip(loader_generators, state["loader"]):
        g.set_state(s)
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    return True


def _save_state(folder: Path, task, opt, sched, epoch: int, selector: Selector,
                history: list, rng: Optional[Dict[str, Any]] = None) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in task.model.state_dict().items()},
              str(folder / "weights.safetensors"))
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch,
                "rng": rng, **selector.state()}, folder / "state.pt")
    (folder / "history.json").write_text(json.dumps(history))


def _load_state(folder: Path, task, opt, sched):
    from safetensors.torch import load_file

    task.model.load_state_dict(load_file(str(folder / "weights.safetensors")), strict=True)
    st = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    opt.load_state_dict(st["optimizer"])
    sched.load_state_dict(st["scheduler"])
    history = json.loads((folder / "history.json").read_text())
    return st["epoch"], st, history


def run(recipe: Recipe, out_dir: Path, split_index: int = 0, resume: bool = False,
        cache_root: Optional[Path] = None, progress: bool = True, localizer=None,
        data: Optional[TrainingData] = None) -> RunResult:
    """Train ``recipe`` on split ``split_index``; see the module docstring for the outputs."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    spec = recipe.train
    if spec.threads:
        torch.set_num_threads(spec.threads)
    out_dir = Path(out_dir)
    device = pick_device(spec.device)
    from accelerate.utils import DistributedDataParallelKwargs

    # a batch may leave a branch unused (data sets rated on one perspective only)
    accelerator = Accelerator(mixed_precision=spec.mixed_precision, cpu=device.type == "cpu",
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    main = accelerator.is_main_process
    torch.manual_seed(recipe.seed)
    if data is None:
        data = prepare_data(recipe, split_index, cache_root=cache_root, progress=progress and main)
    task = build_task(recipe, localizer=localizer).to(accelerator.device)
    resuming = resume and (out_dir / "last" / "state.pt").is_file()
    if resuming and not data.matches_saved_splits(out_dir / "splits"):
        raise RecipeError(f"--resume: {out_dir} holds a run on other splits (another --split, seed or data "
                          "set); resume with the same ones, or choose another --out")
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_yaml(out_dir / "recipe.yaml", recipe.to_dict())
        data.save_splits(out_dir / "splits")
    train_dl = loader(data.items("train"), data.cache, spec.batch_size, shuffle=True, seed=recipe.seed,
                      num_workers=spec.num_workers, drop_last=len(data.items("train")) > spec.batch_size,
                      batching=spec.batching)
    steps = len(train_dl) if spec.max_steps_per_epoch is None else min(len(train_dl), spec.max_steps_per_epoch)
    loader_generators = _generators(train_dl)
    opt = _optimizer(task, spec)
    sched = _scheduler(opt, spec, steps)
    task.model, opt, train_dl = accelerator.prepare(task.model, opt, train_dl)

    selector = Selector(spec.select, spec.select_branches if isinstance(task, JointTask) else {})
    start, history = 0, []
    if resuming:
        last, state, history = _load_state(out_dir / "last", _Unwrapped(task, accelerator), opt, sched)
        selector.restore(out_dir / "model", accelerator.unwrap_model(task.model), state)
        start = last + 1
        exact = _restore_rng(state.get("rng"), loader_generators)
        if main:
            print(f"resuming {out_dir} after epoch {start} (best so far: epoch {selector.report()})"
                  + ("" if exact else "; this state predates saved random generators, so the batch "
                                      "order of later epochs differs from an uninterrupted run"))
    val_items = data.items("val")
    if spec.linear_probe and start == 0 and isinstance(task, JointTask):
        from .probe import linear_probe

        unwrapped = _Unwrapped(task, accelerator)
        probe = linear_probe(unwrapped, data, recipe.loss_config().objective, spec.eval_batch_size,
                             log=print if main else None)
        val = evaluate_items(predict_items(unwrapped, val_items, data, spec.eval_batch_size), val_items) \
            if val_items else {}
        score, _ = selector.update(val, 0, unwrapped.model)
        history.append({"epoch": 0, "train_loss": math.nan, "val_select": score, "val": _compact(val),
                        "seconds": 0.0, "lr": 0.0, "probe": probe})
        if main:
            selector.export(unwrapped, out_dir / "model")
            print(f"epoch   0 (linear probe)  {selector.describe(score)}  *best*", flush=True)
    backbone_params = [p for n, p in accelerator.unwrap_model(task.model).named_parameters()
                       if ".backbone." in f".{n}" and p.requires_grad]
    for epoch in range(start, spec.epochs):
        warmup = epoch < spec.freeze_epochs
        for p in backbone_params:
            p.requires_grad_(not warmup)
        task.model.train()
        _keep_frozen_in_eval(accelerator.unwrap_model(task.model), spec.freeze)
        t0 = time.time()
        losses: List[float] = []
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{spec.epochs}" + (" (heads only)" if warmup else ""),
                   unit="batch",
                   disable=not (progress and main), leave=False)
        for step, batch in enumerate(train_dl):
            if step >= steps:
                break
            gen = torch.Generator().manual_seed(recipe.seed * 1_000_003 + epoch * 10_007 + step)
            with accelerator.autocast():
                loss, parts = task.loss(batch, gen)
            opt.zero_grad(set_to_none=True)
            if loss.requires_grad:  # a batch that reaches only frozen parts has nothing to train
                accelerator.backward(loss)
                if spec.grad_clip:
                    accelerator.clip_grad_norm_(task.model.parameters(), spec.grad_clip)
                opt.step()
            with warnings.catch_warnings():  # the schedule counts skipped steps too, on purpose
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
                sched.step()
            losses.append(parts["loss"])
            bar.set_postfix(loss=f"{parts['loss']:.4f}")
            bar.update(1)
        bar.close()
        unwrapped = _Unwrapped(task, accelerator)
        val = evaluate_items(predict_items(unwrapped, val_items, data, spec.eval_batch_size), val_items) \
            if val_items else {}
        score, improved = selector.update(val, epoch + 1, unwrapped.model)
        if improved and main:
            selector.export(unwrapped, out_dir / "model")
        entry = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else math.nan,
                 "val_select": score, "val": _compact(val), "seconds": time.time() - t0,
                 "lr": opt.param_groups[0]["lr"]}
        history.append(entry)
        if main:
            _save_state(out_dir / "last", unwrapped, opt, sched, epoch, selector, history,
                        rng=_rng_state(loader_generators))
            print(f"epoch {epoch + 1:>3}/{spec.epochs}  loss {entry['train_loss']:.4f}  "
                  f"{selector.describe(score)}{'  *best*' if improved else ''}  "
                  f"({entry['seconds']:.0f}s)", flush=True)
    accelerator.wait_for_everyone()
    if not main:
        return RunResult(out_dir, selector.report(), {}, {}, history)
    best_epoch = selector.report()
    if selector.best_epoch is None:  # no validation set: keep the last epoch
        _Unwrapped(task, accelerator).export(out_dir / "model")
        best_epoch = history[-1]["epoch"] if history else 0
    task.model = accelerator.unwrap_model(task.model)
    return finish(recipe, task, data, out_dir, best_epoch, history)


def finish(recipe: Recipe, task, data: TrainingData, out_dir: Path, best_epoch: Any,
           history: List[Dict[str, Any]]) -> RunResult:
    """Reload the best checkpoint, fit the fusion if asked, score val and test, write reports."""
    spec = recipe.train
    task.load_exported(out_dir / "model")
    fusion = None
    if spec.fit_fusion and isinstance(task, JointTask):
        fusion = fit_fusion(task, data, spec.fit_fusion, spec.eval_batch_size)
        task.export(out_dir / "model")
    val_items, test_items = data.items("val"), data.items("test")
    val = evaluate_items(predict_items(task, val_items, data, spec.eval_batch_size), val_items) if val_items else {}
    test_preds = test_predictions(task, test_items, data, out_dir, spec)
    test = evaluate_items(test_preds, test_items, bootstrap=spec.bootstrap, seed=recipe.seed) if test_items else {}
    report = {"recipe": recipe.name, "best_epoch": best_epoch, "fusion": fusion, "val": val, "test": test,
              "history": history, "splits": {n: {p: len(getattr(s, p)) for p in ("train", "val", "test")}
                                              for n, s in data.splits.items()}}
    (out_dir / "metrics.json").write_text(json.dumps(_jsonable(report), indent=2))
    write_predictions(out_dir / "predictions.csv", test_items, test_preds)
    (out_dir / "results.md").write_text(results_markdown(recipe.name, test, val))
    try:
        plot_curves(history, out_dir / "curves.png")
        plot_scatter(test_preds, test_items, out_dir / "scatter.png")
    except Exception as e:  # plotting must never lose a finished run
        print(f"warning: plots not written ({type(e).__name__}: {e})")
    return RunResult(out_dir, best_epoch, val, test, history)


def test_predictions(task, items: Sequence[Item], data: TrainingData, out_dir: Path, spec) -> Dict[str, np.ndarray]:
    """Test predictions: for JOINT through NaturalnessScorer on the exported checkpoint."""
    if not items:
        return {a: np.zeros(0) for a in AXES}
    if isinstance(task, JointTask):
        from joint_core import NaturalnessScorer

        from joint_core.preprocess.localizer import NoLocalizer

        localizer = task.preprocessor.localizer
        scorer = NaturalnessScorer.from_pretrained(out_dir / "model", device=pick_device(spec.device),
                                                   dtype="float32",
                                                   localizer=None if isinstance(localizer, NoLocalizer) else localizer)
        # from the image files, exactly as a user would score them (not the training cache,
        # whose copies may be downscaled to cache_max_side)
        res = scorer.score([it.sample.path for it in items], batch_size=spec.eval_batch_size, progress=False,
                           on_error="raise")
        return {a: getattr(res, a).double().numpy() for a in AXES}
    return predict_items(task, items, data, spec.eval_batch_size)


class _Unwrapped:
    """The task with accelerate's wrapper removed from its model (for eval and export)."""

    def __init__(self, task, accelerator):
        self._task = task
        self.model = accelerator.unwrap_model(task.model)

    def __getattr__(self, name):
        return getattr(self._task, name)

    @contextlib.contextmanager
    def _bare(self):
        """The task with its model swapped for the unwrapped one, for one call."""
        model = self._task.model
        self._task.model = self.model
        try:
            yield self._task
        finally:
            self._task.model = model

    def predict(self, batch):
        with self._bare() as task:
            return task.predict(batch)

    def export(self, folder):
        with self._bare() as task:
            return task.export(folder)

    def load_exported(self, folder):
        with self._bare() as task:
            return task.load_exported(folder)


# --------------------------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------------------------


def _compact(val: Dict[str, Dict[str, Dict[str, Any]]]) -> Dict[str, Dict[str, Dict[str, float]]]:
    return {d: {a: {k: m[k] for k in ("srcc", "plcc", "krcc", "rmse") if k in m} for a, m in axes.items()}
            for d, axes in val.items()}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if math.isnan(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    return obj


def _write_yaml(path: Path, data: Dict[str, Any]) -> None:
    import yaml

    path.write_text(yaml.safe_dump(_jsonable(data), sort_keys=False), encoding="utf-8")


def write_predictions(path: Path, items: Sequence[Item], preds: Dict[str, np.ndarray]) -> None:
    labels = labels_of(items)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "name", "technical", "rationality", "naturalness", "mos", "mos_t", "mos_r"])
        for i, it in enumerate(items):
            w.writerow([it.dataset, it.sample.name] + [_fmt(preds[a][i]) for a in AXES]
                       + [_fmt(labels[k][i]) for k in ("mos", "mos_t", "mos_r")])


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
            {k: col(k) for k in ("mos", "mos_t", "mos_r")})


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


