"""The JOINT model: a technical branch, a rationality branch, their heads and the fusion.

``JointModel`` takes already-preprocessed tensors (see :mod:`joint_core.preprocess`); it knows
nothing about files or image formats. Scores are raw regressions on the model's score scale
(``config.score_range``); naturalness = w_T * T + w_R * R + b, optionally passed through a
4-parameter logistic calibration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from .backbones import create_backbone
from .config import BranchConfig, CalibrationConfig, FusionConfig, JointConfig

_ACTIVATIONS = {"none": nn.Identity, "relu": nn.ReLU, "gelu": nn.GELU}


def logistic4(x: Tensor, params: Sequence[float]) -> Tensor:
    """The 4-parameter logistic used in IQA: ``(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``."""
    b1, b2, b3, b4 = (float(p) for p in params)
    return (b1 - b2) * torch.sigmoid((x - b3) / abs(b4)) + b2


class Standardize(nn.Module):
    """Per-feature ``(x - mean) / std`` with fixed statistics (buffers, saved with the weights;
    fitted on the training images by ``train``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def _head_norm(kind: str, dim: int) -> nn.Module:
    if kind == "layernorm":
        return nn.LayerNorm(dim)
    if kind == "standardize":
        return Standardize(dim)
    return nn.Identity()


def stage_statistics(x: Tensor) -> Tensor:
    """``[B, C, H, W]`` -> ``[B, 2C]``: spatial mean and (population) standard deviation."""
    flat = x.flatten(2).float()
    return torch.cat([flat.mean(2), flat.std(2, correction=0)], 1).to(x.dtype)


@dataclass
class BranchOutput:
    score: Tensor                 # [B]
    embedding: Tensor             # [B, d]: what the head reads (pooled features or logits)
    stages: Optional[List[Tensor]] = None   # per-stage feature maps, shallow to deep


@dataclass
class JointOutput:
    technical: Tensor             # [B]
    rationality: Tensor           # [B]
    naturalness: Tensor           # [B]
    technical_embedding: Optional[Tensor] = None
    rationality_embedding: Optional[Tensor] = None
    rationality_stages: Optional[List[Tensor]] = field(default=None, repr=False)
    # the rationality branch's features of a second view (training: the low-frequency map)
    paired_embedding: Optional[Tensor] = None
    paired_stages: Optional[List[Tensor]] = field(default=None, repr=False)


class Branch(nn.Module):
    """A timm backbone and its regression head ``Linear(d, hidden) -> [act] -> Linear(hidden, 1)``."""

    def __init__(self, cfg: BranchConfig, pretrained: bool = False, extra_dim: int = 0):
        super().__init__()
        self.config = cfg
        if cfg.backbone == "none":   # a head on ``extra`` features only (config.validate allows it with head_extra)
            self.backbone, self.feature_dim = None, 0
        else:
            self.backbone, self.feature_dim = create_backbone(cfg, pretrained=pretrained)
        # the head reads this branch's features, joined with ``extra_dim`` features from elsewhere
        # (``head_extra``: the technical branch's head input)
        self.head_dim = self.feature_dim + extra_dim
        self.head_norm = _head_norm(cfg.head_norm, self.head_dim)
        self.head = nn.Sequential(
            nn.Linear(self.head_dim, cfg.head_hidden),
            _ACTIVATIONS[cfg.head_activation](),
            nn.Dropout(cfg.head_dropout),
            nn.Linear(cfg.head_hidden, 1),
        )

    def forward(self, x: Tensor, return_stages: bool = False, extra: Optional[Tensor] = None) -> BranchOutput:
        """Scores of ``x``; ``extra`` ``[B, extra_dim]`` is joined to the features before the head."""
        if (extra is None) != (self.head_dim == self.feature_dim):
            raise ValueError(f"this branch's head reads {self.head_dim - self.feature_dim} extra features "
                             f"(head_extra), got {'none' if extra is None else tuple(extra.shape)}")
        if self.backbone is None:
            if return_stages:
                raise NotImplementedError("a branch without a backbone has no stage features")
            score = self.head(self.head_norm(extra)).squeeze(-1)
            return BranchOutput(score=score, embedding=extra)
        if self.config.head_input == "tokens":
            if return_stages:
                raise NotImplementedError("stage features (the Wasserstein regulariser) are not available "
                                          "with head_input='tokens'")
            final, blocks = self.backbone.forward_intermediates(x, return_prefix_tokens=True, output_fmt="NLC")
            parts = [self.backbone.forward_head(final)]
            for patches, prefix in blocks:
                parts += [prefix[:, 0], *stage_statistics(patches.transpose(1, 2)).chunk(2, dim=1)]
            embedding = self._join(torch.cat(parts, 1), extra)
            return BranchOutput(score=self.head(self.head_norm(embedding)).squeeze(-1), embedding=embedding)
        multilevel = self.config.head_input == "stages"
        if return_stages or multilevel:
            if not hasattr(self.backbone, "forward_intermediates"):
                raise NotImplementedError(
                    f"timm backbone {self.config.backbone!r} has no forward_intermediates(); "
                    "stage features (the Wasserstein regulariser, head_input='stages') are unavailable")
            final, stages = self.backbone.forward_intermediates(x)
            embedding = self.backbone.forward_head(final)
            if multilevel:
                embedding = torch.cat([embedding] + [stage_statistics(s) for s in stages], 1)
        else:
            stages = None
            embedding = self.backbone(x)
        embedding = self._join(embedding, extra)
        score = self.head(self.head_norm(embedding)).squeeze(-1)
        return BranchOutput(score=score, embedding=embedding, stages=stages if return_stages else None)


    @staticmethod
    def _join(embedding: Tensor, extra: Optional[Tensor]) -> Tensor:
        return embedding if extra is None else torch.cat([embedding, extra.to(embedding.dtype)], 1)


class JointModel(nn.Module):
    """Two branches and the subjective-weighting fusion of the AGIN paper."""

    def __init__(self, config: JointConfig, pretrained_backbones: bool = False):
        super().__init__()
        config.validate()
        self.config = config
        self.technical = Branch(config.technical, pretrained=pretrained_backbones)
        extra = self.technical.feature_dim if config.rationality.head_extra == "technical" else 0
        self.rationality = Branch(config.rationality, pretrained=pretrained_backbones, extra_dim=extra)

    @property
    def fusion(self) -> FusionConfig:
        return self.config.fusion

    @property
    def calibration(self) -> Optional[CalibrationConfig]:
        return self.config.calibration

    def fuse(self, technical: Tensor, rationality: Tensor) -> Tensor:
        """Naturalness from the two branch scores (fusion, then optional calibration)."""
        f = self.fusion
        nat = f.technical_weight * technical + f.rationality_weight * rationality + f.bias
        cal = self.calibration
        if cal is not None:
            x = nat if cal.input == "naturalness" else technical + rationality
            nat = logistic4(x, cal.params)
        return nat

    def forward(self, technical_input: Optional[Tensor], rationality_input: Optional[Tensor],
                return_features: bool = False, paired_rationality_input: Optional[Tensor] = None) -> JointOutput:
        """Both branches and the fusion. Training may pass ``None`` for a branch it does not
        need on this batch, or different images to each branch (the naturalness is then
        ``None``). ``paired_rationality_input`` (training, the Wasserstein regulariser) runs the
        rationality branch on a second view inside this same forward, so that a
        DistributedDataParallel wrapper sees both passes."""
        t = self.technical(technical_input) if technical_input is not None else None
        extra = None
        if self.config.rationality.head_extra == "technical" and rationality_input is not None:
            if t is None or t.embedding.shape[0] != rationality_input.shape[0]:
                raise ValueError("the rationality head reads the technical branch's features (head_extra): "
                                 "give both inputs, for the same images")
            extra = t.embedding
        r = self.rationality(rationality_input, return_stages=return_features, extra=extra) \
            if rationality_input is not None else None
        p = self.rationality(paired_rationality_input, return_stages=True, extra=extra) \
            if paired_rationality_input is not None else None
        return JointOutput(
            technical=t.score if t is not None else None,
            rationality=r.score if r is not None else None,
            naturalness=self.fuse(t.score, r.score)
            if t is not None and r is not None and t.score.shape == r.score.shape else None,
            technical_embedding=t.embedding if return_features and t is not None else None,
            rationality_embedding=r.embedding if return_features and r is not None else None,
            rationality_stages=r.stages if r is not None else None,
            paired_embedding=p.embedding if p is not None else None,
            paired_stages=p.stages if p is not None else None,
        )

    def rationality_features(self, rationality_input: Tensor) -> Tuple[Tensor, List[Tensor]]:
        """The rationality branch's head input and stage maps (paper eq. 3's features)."""
        out = self.rationality(rationality_input, return_stages=True)
        return out.embedding, out.stages

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.inference_mode()
    def gflops(self) -> float:
        """The forward cost of one image in GFLOPs (both branches at the preprocessing crop
        sizes), counted by torch's ``FlopCounterMode`` on one blank image: a property of the
        model, not of the machine, so plans made from it (:func:`joint_core.devices.plan_cpu`)
        are the same on every run. Counted once, then cached."""
        if getattr(self, "_gflops", None) is None:
            p = self.config.preprocess
            param = next(self.parameters())
            kw = {"device": param.device, "dtype": param.dtype}
            x_t = torch.zeros(1, 3, p.technical.crop, p.technical.crop, **kw)
            x_r = torch.zeros(1, 3, p.rationality.crop, p.rationality.crop, **kw)
            with FlopCounterMode(display=False) as counter:
                self(x_t, x_r)
            self._gflops = counter.get_total_flops() / 1e9
        return self._gflops
