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

The parts live beside it: :mod:`train.selection` (which epoch is exported), :mod:`train.resume`
(``last/``) and :mod:`train.report` (the files people read).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from joint_core.devices import pick_device
from joint_core.result import AXES

from . import metrics as M
from .data import Item, TrainingData, labels_of, loader, prepare_data
from .labels import LABEL_OF_AXIS
from .recipe import Recipe, RecipeError
from .report import compact, jsonable, plot_curves, plot_scatter, results_markdown, write_predictions, write_yaml
from .resume import load_state, loader_generators, restore_rng, rng_state, save_state
from .selection import Selector
from .tasks import JointTask, build_task, is_frozen

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


def _optimizer(task, ts):
    backbone, head = task.parameter_groups(ts.freeze)
    groups = [{"params": backbone, "lr": ts.lr}, {"params": head, "lr": ts.head_lr or ts.lr}]
    groups = [g for g in groups if g["params"]]
    cls = torch.optim.AdamW if ts.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, weight_decay=ts.weight_decay)


def _scheduler(opt, ts, steps_per_epoch: int):
    total = max(1, ts.epochs * steps_per_epoch)
    warm = ts.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        epoch = step // max(1, steps_per_epoch)
        if ts.scheduler == "step":
            return ts.gamma ** (epoch // ts.step_size)
        if ts.scheduler == "cosine":
            t = (step - warm) / max(1, total - warm)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _keep_frozen_in_eval(model: torch.nn.Module, frozen: Sequence[str]) -> None:
    """Frozen parts (``train.freeze``) stay in eval mode while the rest trains, so that their
    batch-norm statistics and dropout do not change either: frozen means unchanged."""
    for name, module in model.named_modules():
        if name and is_frozen(name, frozen):
            module.eval()


def run(recipe: Recipe, out_dir: Path, split_index: int = 0, resume: bool = False,
        cache_root: Optional[Path] = None, progress: bool = True, localizer=None,
        data: Optional[TrainingData] = None) -> RunResult:
    """Train ``recipe`` on split ``split_index``; see the module docstring for the outputs."""
    ts = recipe.train
    if ts.threads:
        torch.set_num_threads(ts.threads)
    out_dir = Path(out_dir)
    accelerator = _accelerator(ts)
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
        write_yaml(out_dir / "recipe.yaml", recipe.to_dict())
        data.save_splits(out_dir / "splits")
    trainer = _Trainer(recipe, task, data, accelerator, out_dir, progress)
    start = trainer.resume() if resuming else 0
    if ts.linear_probe and start == 0 and isinstance(task, JointTask):
        trainer.linear_probe()
    for epoch in range(start, ts.epochs):
        trainer.train_epoch(epoch)
    accelerator.wait_for_everyone()
    selector, history = trainer.selector, trainer.history
    if not main:
        return RunResult(out_dir, selector.report(), {}, {}, history)
    best_epoch = selector.report()
    if selector.best_epoch is None:  # no validation set: keep the last epoch
        _Unwrapped(task, accelerator).export(out_dir / "model")
        best_epoch = history[-1]["epoch"] if history else 0
    task.model = accelerator.unwrap_model(task.model)
    return finish(recipe, task, data, out_dir, best_epoch, history)


def _accelerator(ts):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    device = pick_device(ts.device)
    # a batch may leave a branch unused (data sets rated on one perspective only)
    return Accelerator(mixed_precision=ts.mixed_precision, cpu=device.type == "cpu",
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


class _Trainer:
    """One run's moving parts (loader, optimizer, schedule, selection, history) and its steps:
    resume, the linear probe (epoch 0), one training epoch."""

    def __init__(self, recipe: Recipe, task, data: TrainingData, accelerator, out_dir: Path, progress: bool):
        ts = recipe.train
        self.recipe, self.ts, self.task, self.data = recipe, ts, task, data
        self.accelerator, self.out_dir = accelerator, out_dir
        self.main = accelerator.is_main_process
        self.progress = progress and self.main
        train_dl = loader(data.items("train"), data.cache, ts.batch_size, shuffle=True, seed=recipe.seed,
                          num_workers=ts.num_workers, drop_last=len(data.items("train")) > ts.batch_size,
                          batching=ts.batching)
        self.steps = len(train_dl) if ts.max_steps_per_epoch is None else min(len(train_dl), ts.max_steps_per_epoch)
        self.generators = loader_generators(train_dl)
        opt = _optimizer(task, ts)
        self.sched = _scheduler(opt, ts, self.steps)
        task.model, self.opt, self.train_dl = accelerator.prepare(task.model, opt, train_dl)
        self.selector = Selector(ts.select, ts.select_branches if isinstance(task, JointTask) else {})
        self.history: List[Dict[str, Any]] = []
        self.val_items = data.items("val")
        self.backbone_params = [p for n, p in accelerator.unwrap_model(task.model).named_parameters()
                                if ".backbone." in f".{n}" and p.requires_grad]

    def unwrapped(self) -> "_Unwrapped":
        return _Unwrapped(self.task, self.accelerator)

    def resume(self) -> int:
        """Continue from ``last/``; returns the first epoch still to train."""
        last, state, self.history = load_state(self.out_dir / "last", self.unwrapped(), self.opt, self.sched)
        self.selector.restore(self.out_dir / "model", self.accelerator.unwrap_model(self.task.model), state)
        exact = restore_rng(state.get("rng"), self.generators)
        if self.main:
            print(f"resuming {self.out_dir} after epoch {last + 1} (best so far: epoch {self.selector.report()})"
                  + ("" if exact else "; this state predates saved random generators, so the batch "
                                      "order of later epochs differs from an uninterrupted run"))
        return last + 1

    def validate(self) -> Dict[str, Any]:
        if not self.val_items:
            return {}
        preds = predict_items(self.unwrapped(), self.val_items, self.data, self.ts.eval_batch_size)
        return evaluate_items(preds, self.val_items)

    def linear_probe(self) -> None:
        """Epoch 0: closed-form heads on frozen features (:mod:`train.probe`)."""
        from .probe import linear_probe

        unwrapped = self.unwrapped()
        probe = linear_probe(unwrapped, self.data, self.recipe.loss_config().objective, self.ts.eval_batch_size,
                             log=print if self.main else None)
        val = self.validate()
        score, _ = self.selector.update(val, 0, unwrapped.model)
        self.history.append({"epoch": 0, "train_loss": math.nan, "val_select": score, "val": compact(val),
                             "seconds": 0.0, "lr": 0.0, "probe": probe})
        if self.main:
            self.selector.export(unwrapped, self.out_dir / "model")
            print(f"epoch   0 (linear probe)  {self.selector.describe(score)}  *best*", flush=True)

    def train_epoch(self, epoch: int) -> None:
        """Train one epoch, validate, export when the selection improves, save the resume state."""
        t0 = time.time()
        losses = self._steps(epoch)
        unwrapped = self.unwrapped()
        val = self.validate()
        score, improved = self.selector.update(val, epoch + 1, unwrapped.model)
        if improved and self.main:
            self.selector.export(unwrapped, self.out_dir / "model")
        entry = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else math.nan,
                 "val_select": score, "val": compact(val), "seconds": time.time() - t0,
                 "lr": self.opt.param_groups[0]["lr"]}
        self.history.append(entry)
        if self.main:
            save_state(self.out_dir / "last", unwrapped, self.opt, self.sched, epoch, self.selector, self.history,
                       rng=rng_state(self.generators))
            print(f"epoch {epoch + 1:>3}/{self.ts.epochs}  loss {entry['train_loss']:.4f}  "
                  f"{self.selector.describe(score)}{'  *best*' if improved else ''}  "
                  f"({entry['seconds']:.0f}s)", flush=True)

    def _steps(self, epoch: int) -> List[float]:
        from tqdm.auto import tqdm

        ts, task, accelerator = self.ts, self.task, self.accelerator
        warmup = epoch < ts.freeze_epochs
        for p in self.backbone_params:
            p.requires_grad_(not warmup)
        task.model.train()
        _keep_frozen_in_eval(accelerator.unwrap_model(task.model), ts.freeze)
        losses: List[float] = []
        bar = tqdm(total=self.steps, desc=f"epoch {epoch + 1}/{ts.epochs}" + (" (heads only)" if warmup else ""),
                   unit="batch", disable=not self.progress, leave=False)
        for step, batch in enumerate(self.train_dl):
            if step >= self.steps:
                break
            gen = torch.Generator().manual_seed(self.recipe.seed * 1_000_003 + epoch * 10_007 + step)
            with accelerator.autocast():
                loss, parts = task.loss(batch, gen)
            self.opt.zero_grad(set_to_none=True)
            if loss.requires_grad:  # a batch that reaches only frozen parts has nothing to train
                accelerator.backward(loss)
                if ts.grad_clip:
                    accelerator.clip_grad_norm_(task.model.parameters(), ts.grad_clip)
                self.opt.step()
            with warnings.catch_warnings():  # the schedule counts skipped steps too, on purpose
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
                self.sched.step()
            losses.append(parts["loss"])
            bar.set_postfix(loss=f"{parts['loss']:.4f}")
            bar.update(1)
        bar.close()
        return losses


def finish(recipe: Recipe, task, data: TrainingData, out_dir: Path, best_epoch: Any,
           history: List[Dict[str, Any]]) -> RunResult:
    """Reload the best checkpoint, fit the fusion if asked, score val and test, write reports."""
    ts = recipe.train
    task.load_exported(out_dir / "model")
    fusion = None
    if ts.fit_fusion and isinstance(task, JointTask):
        fusion = fit_fusion(task, data, ts.fit_fusion, ts.eval_batch_size)
        task.export(out_dir / "model")
    val_items, test_items = data.items("val"), data.items("test")
    val = evaluate_items(predict_items(task, val_items, data, ts.eval_batch_size), val_items) if val_items else {}
    test_preds = test_predictions(task, test_items, data, out_dir, ts)
    test = evaluate_items(test_preds, test_items, bootstrap=ts.bootstrap, seed=recipe.seed) if test_items else {}
    report = {"recipe": recipe.name, "best_epoch": best_epoch, "fusion": fusion, "val": val, "test": test,
              "history": history, "splits": {n: {p: len(getattr(s, p)) for p in ("train", "val", "test")}
                                              for n, s in data.splits.items()}}
    (out_dir / "metrics.json").write_text(json.dumps(jsonable(report), indent=2))
    write_predictions(out_dir / "predictions.csv", test_items, test_preds)
    (out_dir / "results.md").write_text(results_markdown(recipe.name, test, val))
    try:
        plot_curves(history, out_dir / "curves.png")
        plot_scatter(test_preds, test_items, out_dir / "scatter.png")
    except Exception as e:  # plotting must never lose a finished run
        print(f"warning: plots not written ({type(e).__name__}: {e})")
    return RunResult(out_dir, best_epoch, val, test, history)


def test_predictions(task, items: Sequence[Item], data: TrainingData, out_dir: Path, ts) -> Dict[str, np.ndarray]:
    """Test predictions: for JOINT through NaturalnessScorer on the exported checkpoint."""
    if not items:
        return {a: np.zeros(0) for a in AXES}
    if isinstance(task, JointTask):
        from joint_core import NaturalnessScorer

        from joint_core.preprocess.localizer import NoLocalizer

        localizer = task.preprocessor.localizer
        scorer = NaturalnessScorer.from_pretrained(out_dir / "model", device=pick_device(ts.device),
                                                   dtype="float32",
                                                   localizer=None if isinstance(localizer, NoLocalizer) else localizer)
        # from the image files, exactly as a user would score them (not the training cache,
        # whose copies may be downscaled to cache_max_side)
        res = scorer.score([it.sample.path for it in items], batch_size=ts.eval_batch_size, progress=False,
                           on_error="raise")
        return {a: getattr(res, a).double().numpy() for a in AXES}
    return predict_items(task, items, data, ts.eval_batch_size)


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


