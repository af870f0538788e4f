"""What the training loop trains: a model, its loss on a batch, its predictions, its export.

* :class:`JointTask` - JOINT / JOINT++ (:class:`joint_core.model.JointModel`), exported in
  ``joint_core``'s format.
* :class:`RegressorTask` - the single-backbone baselines: a plain regressor (NR-AIGCIQA, or
  "ResNet50 / Swin-T alone") and the full-reference variant FR-AIGCIQA, whose head reads the
  generated image's features joined with its reference (prompt) image's features.

Preprocessing always goes through :class:`joint_core.preprocess.Preprocessor`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from joint_core.backbones import check_fits
from joint_core.checkpoint import WEIGHTS_NAME, load_weights, save_model, save_weights
from joint_core.config import BranchConfig, JointConfig
from joint_core.model import JointModel
from joint_core.preprocess import Preprocessor
from joint_core.preprocess.pipeline import normalize

from .data import Batch
from .importers import load_imagenet_weights
from .degrade import degrade
from .labels import AXIS_OF_LABEL
from .losses import LossConfig, consistency_loss, joint_objective, ranking_hinge, wsd_loss
from .recipe import ModelSpec, Recipe, RecipeError

# --------------------------------------------------------------------------------------------
# initialisation
# --------------------------------------------------------------------------------------------


def init_backbone(backbone: nn.Module, name: str, how: str) -> None:
    """Initialise a timm backbone in place: ``timm`` / ``package`` (pretrained weights from a
    package-index package, :func:`train.importers.load_imagenet_weights`; ``imagenet-package``
    is the same) / ``none``."""
    import timm

    if how == "none":
        return
    if how not in ("timm", "imagenet-package", "package"):
        raise RecipeError(f"init {how!r} for {name}: use timm, package (alias imagenet-package) or none")
    source = timm.create_model(name, pretrained=False)   # with its classifier
    if how in ("imagenet-package", "package"):
        load_imagenet_weights(source, name)
    else:
        try:
            source = timm.create_model(name, pretrained=True)
        except Exception as e:  # no hub connection, unknown weights...
            raise RecipeError(
                f"init 'timm' for {name} needs timm's pretrained weights from the hub ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}); use init 'imagenet-package' "
                "(EfficientNet-Lite0/2, MobileNetV2) or 'none' offline") from None
    state = source.state_dict()
    target = backbone.state_dict()
    usable = {k: v for k, v in state.items() if k in target and v.shape == target[k].shape}
    check_fits(usable, backbone, allow_missing=[r"^(fc|classifier|head)\b", r"^head\."])
    backbone.load_state_dict(usable, strict=False)


def is_frozen(name: str, frozen: Sequence[str]) -> bool:
    """Whether a parameter or module name falls under one of ``train.freeze``'s prefixes."""
    return any(name.startswith(f) for f in frozen)


def _params(module: nn.Module, frozen: List[str], prefix: str = "") -> Tuple[list, list]:
    backbone, head = [], []
    for name, p in module.named_parameters():
        full = prefix + name
        if is_frozen(full, frozen):
            p.requires_grad_(False)
            continue
        (backbone if ".backbone." in f".{full}" or full.startswith("backbone.") else head).append(p)
    return backbone, head


# --------------------------------------------------------------------------------------------
# JOINT
# --------------------------------------------------------------------------------------------


class _Task:
    """What the loop needs of every task besides loss / predict / export: ``model`` (an
    ``nn.Module``) and ``preprocessor`` moved together, and the parameter groups to optimise."""

    model: nn.Module
    preprocessor: Preprocessor

    def to(self, device: torch.device):
        self.model.to(device)
        self.preprocessor.to(device)
        return self

    def parameter_groups(self, frozen: List[str]) -> Tuple[list, list]:
        """``(backbone, head)`` parameters, the frozen ones (``train.freeze``) left out."""
        return _params(self.model, frozen)


class JointTask(_Task):
    """JOINT / JOINT++ on a :class:`JointModel`."""

    kind = "joint"

    def __init__(self, config: JointConfig, loss: LossConfig, model_spec: Optional[ModelSpec] = None,
                 localizer=None):
        self.config = config
        self.loss_cfg = loss
        self.model = JointModel(config)
        if model_spec is not None:
            if model_spec.checkpoint:  # fine-tune: the recipe's architecture, the checkpoint's weights
                load_weights(self.model, Path(model_spec.checkpoint) / WEIGHTS_NAME)
            else:
                for branch in ("technical", "rationality"):
                    init_backbone(getattr(self.model, branch).backbone,
                                  getattr(config, branch).backbone, model_spec.init.get(branch, "none"))
        self.preprocessor = Preprocessor(config.preprocess, _localizer_for(config, localizer))
        self.needs_lfm = loss.use_wsd and loss.objective in ("is", "joint++") and loss.beta > 0
        self._memo: Dict[str, Dict[str, Tensor]] = {}   # frozen branches' head inputs, per image key

    def loss(self, batch: Batch, generator: torch.Generator) -> Tuple[Tensor, Dict[str, float]]:
        if self.loss_cfg.objective == "fs" and self.loss_cfg.missing_labels == "skip":
            return self._per_branch_loss(batch, generator)
        if self.loss_cfg.distortion_rank > 0:
            raise RecipeError("loss.distortion_rank needs loss.objective 'fs' with missing_labels 'skip'")
        pre = self.preprocessor
        imgs = pre.prepare(batch.images)
        x_t = pre.technical(imgs, train=True, generator=generator)
        feeds_lfm = self.config.preprocess.rationality.low_frequency
        if self.needs_lfm:
            x_img, x_lfm = pre.rationality_pair(imgs, train=True, generator=generator)
            x_r = x_lfm if feeds_lfm else x_img
        else:
            x_r = pre.rationality(imgs, train=True, generator=generator)
        other = (x_img if feeds_lfm else x_lfm) if self.needs_lfm else None
        # one forward call (both rationality views inside it): what a DDP wrapper supports
        out = self.model(x_t, x_r, return_features=self.needs_lfm, paired_rationality_input=other)
        wsd = None
        if self.needs_lfm:
            wsd = wsd_loss(out.rationality_embedding, out.paired_embedding, out.rationality_stages,
                           out.paired_stages, p=self.loss_cfg.wsd_p)
        dev = out.technical.device
        return joint_objective(out.technical, out.rationality, batch.mos.to(dev), batch.mos_t.to(dev),
                               batch.mos_r.to(dev), wsd, self.loss_cfg)

    def _per_branch_loss(self, batch: Batch, generator: torch.Generator) -> Tuple[Tensor, Dict[str, float]]:
        """L_FS on batches mixing data sets rated on different perspectives: each branch runs
        only on the images that carry its label (half the compute when no image has both)."""
        pre = self.preprocessor
        has_t = (~torch.isnan(batch.mos_t)).nonzero().flatten().tolist()
        has_r = (~torch.isnan(batch.mos_r)).nonzero().flatten().tolist()
        imgs = pre.prepare(batch.images)
        x_t = pre.technical([imgs[i] for i in has_t], train=True, generator=generator) if has_t else None
        x_r = pre.rationality([imgs[i] for i in has_r], train=True, generator=generator) if has_r else None
        ranked = has_t and self.loss_cfg.distortion_rank > 0
        if ranked:  # degraded copies of the same crops ride in the same forward pass
            x_t = torch.cat([x_t, self._degraded(x_t, generator)])
        out = self.model(x_t, x_r)
        dev = (out.technical if out.technical is not None else out.rationality).device
        tech = out.technical
        if ranked:
            tech, tech_degraded = tech.float().chunk(2)
        n = len(batch)
        t = torch.zeros(n, device=dev, dtype=torch.float32)
        r = torch.zeros(n, device=dev, dtype=torch.float32)
        if has_t:
            t = t.index_copy(0, torch.tensor(has_t, device=dev), tech.float())
        if has_r:
            r = r.index_copy(0, torch.tensor(has_r, device=dev), out.rationality.float())
        loss, parts = joint_objective(t, r, batch.mos.to(dev), batch.mos_t.to(dev), batch.mos_r.to(dev), None,
                                      self.loss_cfg)
        if ranked:
            rank = ranking_hinge(tech, tech_degraded, self.loss_cfg.distortion_margin)
            loss = loss + self.loss_cfg.distortion_rank * rank
            parts.update(rank=float(rank.detach()), loss=float(loss.detach()))
        return loss, parts

    def _degraded(self, x_t: Tensor, generator: torch.Generator) -> Tensor:
        """Degraded copies of normalised technical inputs (degraded in [0, 1] pixel space)."""
        m, s = self.config.preprocess.normalization("technical")
        mean = torch.tensor(m, device=x_t.device, dtype=x_t.dtype).view(1, 3, 1, 1)
        std = torch.tensor(s, device=x_t.device, dtype=x_t.dtype).view(1, 3, 1, 1)
        return normalize(degrade((x_t * std + mean).clamp(0, 1), generator), m, s)

    def _frozen(self, branch: str) -> bool:
        """Whether ``branch``'s backbone never trains in this run (``train.freeze``), so that its
        features of an image can be computed once and reused."""
        return not any(p.requires_grad for p in getattr(self._bare(), branch).backbone.parameters())

    def _bare(self) -> JointModel:
        return getattr(self.model, "module", self.model)   # under a DDP wrapper: the model itself

    @torch.no_grad()
    def head_inputs(self, batch: Batch, branch: str, prepared: Optional[List[Tensor]] = None) -> Tensor:
        """The head input of ``branch`` for every image of ``batch`` (scoring-time preprocessing,
        eval mode). While the branch's backbone is frozen they are kept per image, so the linear
        probe, validation and the fusion fit run a frozen backbone once per image, not once per
        pass (a large frozen tower dominates a run's time on CPU)."""
        frozen = self._frozen(branch)
        memo = self._memo.setdefault(branch, {})
        if frozen:
            store = self._store_folder(branch)
            for k in batch.keys:
                if k not in memo and store is not None and (store / _file_key(k)).is_file():
                    memo[k] = torch.from_numpy(np.load(store / _file_key(k)))
            if all(k in memo for k in batch.keys):
                return torch.stack([memo[k] for k in batch.keys])
        pre = self.preprocessor
        imgs = prepared if prepared is not None else pre.prepare(batch.images)
        x = pre.technical(imgs) if branch == "technical" else pre.rationality(imgs)
        emb = getattr(self._bare(), branch)(x).embedding
        if frozen:
            store = self._store_folder(branch)
            for k, e in zip(batch.keys, emb):
                memo[k] = e.detach().float().cpu()
                if store is not None:
                    store.mkdir(parents=True, exist_ok=True)
                    tmp = store / (_file_key(k) + ".tmp.npy")
                    np.save(tmp, memo[k].numpy())
                    os.replace(tmp, store / _file_key(k))
        return emb

    def attach_feature_store(self, folder: Path, images: str) -> None:
        """Keep frozen branches' head inputs on disk under ``folder`` too, so that another run
        (a variant, a rerun) with the same backbone weights, branch and preprocessing config, on
        the same decoded images (``images``: the image cache's key), skips the backbone."""
        self._store = (Path(folder), images)
        self._store_keys = {}

    def _store_folder(self, branch: str) -> Optional[Path]:
        if getattr(self, "_store", None) is None:
            return None
        if branch not in self._store_keys:
            from joint_core.checkpoint import state_hash

            module = getattr(self._bare(), branch)
            cfg = getattr(self.config, branch)   # what decides the head input (not the head itself)
            what = json.dumps({"branch": {k: getattr(cfg, k) for k in ("backbone", "backbone_kwargs", "head_input",
                                                                      "num_logits")},
                               "preprocess": dataclasses.asdict(self.config.preprocess),
                               "localizer": type(self.preprocessor.localizer).__name__,
                               "weights": state_hash(module.backbone.state_dict()),
                               "images": self._store[1]}, sort_keys=True, default=str)
            self._store_keys[branch] = hashlib.sha256(what.encode()).hexdigest()[:20]
        return self._store[0] / f"{branch}-{self._store_keys[branch]}"

    @torch.no_grad()
    def predict(self, batch: Batch) -> Dict[str, Tensor]:
        """Scoring-time predictions (the same Preprocessor path as NaturalnessScorer; a frozen
        backbone's features come from :meth:`head_inputs`' memo)."""
        model = self._bare()
        imgs = None
        scores = {}
        for branch in ("technical", "rationality"):
            module = getattr(model, branch)
            if imgs is None and not (self._frozen(branch) and all(k in self._memo.get(branch, {})
                                                                   for k in batch.keys)):
                imgs = self.preprocessor.prepare(batch.images)
            emb = self.head_inputs(batch, branch, prepared=imgs)
            dev = next(module.head.parameters()).device
            scores[branch] = module.head(module.head_norm(emb.to(dev))).squeeze(-1)
        t, r = scores["technical"], scores["rationality"]
        return {"technical": t, "rationality": r, "naturalness": model.fuse(t, r)}

    def export(self, folder: Path) -> Path:
        return save_model(self.model, folder)

    def load_exported(self, folder: Path) -> None:
        load_weights(self.model, Path(folder) / WEIGHTS_NAME)


# --------------------------------------------------------------------------------------------
# single-backbone baselines
# --------------------------------------------------------------------------------------------


class Regressor(nn.Module):
    """timm backbone -> MLP head; with ``reference=True`` the head reads [f(image), f(reference)]."""

    def __init__(self, backbone: str, head_hidden: int = 128, reference: bool = False):
        super().__init__()
        from joint_core.backbones import create_backbone

        self.backbone, dim = create_backbone(BranchConfig(backbone))
        self.reference = reference
        self.head = nn.Sequential(nn.Linear(dim * (2 if reference else 1), head_hidden), nn.ReLU(),
                                  nn.Linear(head_hidden, 1))

    def forward(self, x: Tensor, ref: Optional[Tensor] = None) -> Tensor:
        f = self.backbone(x)
        if self.reference:
            if ref is None:
                raise ValueError("the full-reference regressor needs reference images")
            f = torch.cat([f, self.backbone(ref)], 1)
        return self.head(f).squeeze(-1)


class RegressorTask(_Task):
    """NR-AIGCIQA / FR-AIGCIQA and the single-branch baselines, trained on one label."""

    def __init__(self, model_spec: ModelSpec, config: JointConfig, loss: LossConfig):
        self.kind = model_spec.kind
        self.model_spec = model_spec
        self.loss_cfg = loss
        self.model = Regressor(model_spec.backbone, model_spec.head_hidden,
                               reference=model_spec.kind == "fr-regressor")
        how = model_spec.init.get("backbone", model_spec.init.get("rationality", "none"))
        init_backbone(self.model.backbone, model_spec.backbone, how)
        self.preprocessor = Preprocessor(config.preprocess)
        self.axis = AXIS_OF_LABEL[model_spec.target]

    def _inputs(self, batch: Batch, train: bool, generator=None) -> Tuple[Tensor, Optional[Tensor]]:
        pre = self.preprocessor
        x = pre.rationality(pre.prepare(batch.images), train=train, generator=generator)
        ref = None
        if self.model.reference:
            if batch.refs is None:
                raise RecipeError("fr-regressor needs a data set with reference images (ref column)")
            ref = pre.rationality(pre.prepare(batch.refs), train=train, generator=generator)
        return x, ref

    def loss(self, batch: Batch, generator: torch.Generator) -> Tuple[Tensor, Dict[str, float]]:
        x, ref = self._inputs(batch, True, generator)
        pred = self.model(x, ref)
        target = getattr(batch, self.model_spec.target).to(pred.device)
        keep = ~torch.isnan(target)
        if not bool(keep.any()):
            return pred.sum() * 0.0, {"loss": 0.0}
        loss = consistency_loss(pred[keep], target[keep], alpha=self.loss_cfg.alpha,
                                plcc_weight=self.loss_cfg.plcc_weight, tau=self.loss_cfg.tau)
        return loss, {"loss": float(loss.detach())}

    @torch.no_grad()
    def predict(self, batch: Batch) -> Dict[str, Tensor]:
        x, ref = self._inputs(batch, False)
        return {self.axis: self.model(x, ref)}

    def export(self, folder: Path) -> Path:
        folder = Path(folder)
        save_weights(self.model.state_dict(), folder / WEIGHTS_NAME)
        (folder / "regressor.json").write_text(json.dumps({
            "kind": self.kind, "backbone": self.model_spec.backbone, "head_hidden": self.model_spec.head_hidden,
            "target": self.model_spec.target}, indent=2))
        return folder

    def load_exported(self, folder: Path) -> None:
        load_weights(self.model, Path(folder) / WEIGHTS_NAME)


def _file_key(item_key: str) -> str:
    return hashlib.sha1(item_key.encode()).hexdigest() + ".npy"


def _localizer_for(config: JointConfig, localizer):
    """The localizer the config asks for: none for ``localizer: none`` (the "w/o localization"
    variant drops a given detector), the given one for ``pal4vst`` (an error without it)."""
    t = config.preprocess.technical
    if t.localizer == "none" or not t.partition:
        return None
    if localizer is None:
        raise RecipeError(f"model.config.preprocess.technical.localizer is {t.localizer!r}: pass the "
                          "detector with --localizer end2end.pt (PAL4VST), or set it to 'none'")
    return localizer


def build_task(recipe: Recipe, localizer=None):
    loss = recipe.loss_config()
    config = recipe.joint_config()   # regressors use its preprocessing
    if recipe.model.kind == "joint":
        return JointTask(config, loss, recipe.model, localizer=localizer)
    return RegressorTask(recipe.model, config, loss)
