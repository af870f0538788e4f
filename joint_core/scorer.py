"""``NaturalnessScorer``: images in, technical / rationality / naturalness scores out.

Every face of the project (CLI, ComfyUI nodes, diffusers hook, training evaluation) scores
through this class.
"""

from __future__ import annotations

import copy
import numbers
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Literal, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from .checkpoint import ResolvedModel, load_model, resolve_model, save_model, state_hash
from .config import JointConfig, get_preset
from .devices import pick_device, pick_dtype, plan_cpu
from .frozen import FrozenBranches
from .int8 import calibration_frames, quantize_backbone
from .model import JointModel, JointOutput
from .preprocess.images import FlaggedImageWarning, ImageItem, ImageLimits, check_layout, collect_images, first_line
from .preprocess.localizer import ArtifactLocalizer, build_localizer
from .preprocess.pipeline import Preprocessor
from .errors import ScoringError
from .result import ScoreResult, describe_by
from .preprocess.loader import iter_batches

ProgressCallback = Callable[[int, int], None]


# --------------------------------------------------------------------------------------------
# scorer
# --------------------------------------------------------------------------------------------


class NaturalnessScorer:
    """Scores images for technical quality, rationality and overall naturalness.

    >>> scorer = NaturalnessScorer.from_pretrained()          # the default model
    >>> result = scorer.score(["a.png", "b.png"])
    >>> result.ranking(by="naturalness")                       # best first
    """

    def __init__(self, model: JointModel, device: Union[str, torch.device, None] = None,
                 dtype: Union[str, torch.dtype, None] = None,
                 localizer: Union[None, str, ArtifactLocalizer] = None,
                 source: Optional[ResolvedModel] = None,
                 batch_invariant: Optional[bool] = None,
                 optimize: Optional[bool] = None,
                 int8: bool = False):
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.source = source
        # On CPU in float32 the two branches run as frozen TorchScript graphs (batch norm folded
        # into the convolutions, oneDNN kernels), equal to eager mode within 1e-6: 2.4x faster for
        # the v1 default's small convolutional backbones, where it was measured; not re-measured
        # for the v2/v3 defaults, whose time goes to a CLIP ViT-B/16 (no batch norm to fold). Built
        # lazily per input shape; any failure falls back to eager.
        self._optimize_arg = optimize
        self._frozen: Optional[FrozenBranches] = None
        # Matrix kernels block their work by batch size, so the same image can differ in the
        # last bits between batch compositions. On CPU the networks run one image at a time
        # (measured no slower for the v1 default's small networks; not re-measured for v2), which
        # makes scores bit-identical alone or in any batch; on GPUs batching is kept for
        # throughput unless batch_invariant=True.
        self._batch_invariant_arg = batch_invariant
        self.batch_invariant = (self.device.type == "cpu") if batch_invariant is None \
            else bool(batch_invariant)
        self.model = model.eval().to(device=self.device, dtype=self.dtype)
        self.channels_last = self.device.type == "cuda"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        for p in self.model.parameters():
            p.requires_grad_(False)
        wanted = model.config.preprocess.technical.localizer
        if localizer is None and wanted != "none" and model.config.preprocess.technical.partition:
            warnings.warn(f"this model was configured with the {wanted!r} artifact localizer but "
                          "none was given; every patch is treated as clean (pass localizer=PATH "
                          "to end2end.pt)", stacklevel=2)
        self.localizer = build_localizer(localizer, self.device)
        self.preprocessor = Preprocessor(model.config.preprocess, self.localizer, self.device)
        self.int8 = False
        self.float_weights_hash: Optional[str] = None
        self.float_parameters: Optional[int] = None
        if int8:
            self._quantize_int8()
        self._reset_optimization()

    def _quantize_int8(self) -> None:
        """``int8=True``: the technical branch's ViT as smoothed dynamic int8 (:mod:`joint_core.int8`)."""
        if self.device.type != "cpu" or self.dtype != torch.float32:
            raise ValueError(f"int8=True runs on CPU in float32; this scorer is on {self.device} in {self.dtype_name}")
        self.model = copy.deepcopy(self.model)   # the caller's model stays float
        self.model.gflops()   # counted on the float network (plans read it), then cached
        self.float_weights_hash = state_hash(self.model.state_dict())   # what identifies the model in job records
        self.float_parameters = self.model.num_parameters()
        pre = self.preprocessor
        frames = calibration_frames()
        inputs = [pre.technical(pre.prepare(frames[i:i + 1])) for i in range(len(frames))]
        branch = self.model.technical
        branch.backbone = quantize_backbone(branch.backbone, self.config.technical.backbone, inputs)
        self.int8 = True
        self._optimize_arg = False   # the int8 layers run eagerly

    def _reset_optimization(self) -> None:
        wanted = self._optimize_arg
        if wanted is None:
            wanted = self.device.type == "cpu" and self.dtype == torch.float32
        self._frozen = FrozenBranches(self.model) if wanted else None

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_path: Union[str, Path, None] = None,
                        device: Union[str, torch.device, None] = None,
                        dtype: Union[str, torch.dtype, None] = None,
                        localizer: Union[None, str, ArtifactLocalizer] = None,
                        revision: Optional[str] = None,
                        batch_invariant: Optional[bool] = None,
                        optimize: Optional[bool] = None,
                        int8: bool = False) -> "NaturalnessScorer":
        """Load a model folder, a hub id (``owner/name``), ``"default"`` or ``"fast"`` (the shipped
        models, :func:`~joint_core.checkpoint.shipped_models`), or - with no
        argument - the first of ``$JOINT_MODEL``, the user cache and the shipped default.

        ``int8=True`` (CPU, float32, a ViT technical branch such as the default's): its linear
        layers run as smoothed dynamic int8 (:mod:`joint_core.int8`), about 1.7x faster on the
        default with scores close to the float ones (SRCC 0.997); ValueError for other models."""
        resolved = resolve_model(name_or_path, revision=revision)
        model = load_model(resolved.path)
        return cls(model, device=device, dtype=dtype, localizer=localizer, source=resolved,
                   batch_invariant=batch_invariant, optimize=optimize, int8=int8)

    @classmethod
    def from_config(cls, config: Union[JointConfig, str], device=None, dtype=None,
                    localizer=None, pretrained_backbones: bool = False, **kwargs: Any) -> "NaturalnessScorer":
        """A scorer with freshly initialised weights (a preset name or a config)."""
        cfg = get_preset(config) if isinstance(config, str) else config
        return cls(JointModel(cfg, pretrained_backbones=pretrained_backbones), device=device,
                   dtype=dtype, localizer=localizer, **kwargs)

    def save_pretrained(self, directory: Union[str, Path],
                        dtype: Optional[torch.dtype] = None) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (weights as float32 unless ``dtype``)."""
        if self.int8:
            raise ValueError("an int8 scorer cannot be saved: save the model loaded without int8")
        model = self.model
        if dtype is None and any(p.dtype != torch.float32 for p in model.parameters()):
            dtype = torch.float32
        return save_model(model, directory, dtype=dtype)

    def to(self, device: Union[str, torch.device, None] = None,
           dtype: Union[str, torch.dtype, None] = None) -> "NaturalnessScorer":
        """Move the scorer (weights, preprocessing, localizer) to ``device`` and/or cast it to
        ``dtype``, in place; returns ``self``. Unlike the constructor, ``None`` keeps the
        current device / dtype. Hosts that park idle models off the GPU use this (ComfyUI).
        Casting to a lower precision rounds the weights; casting back does not undo that."""
        new_device = self.device if device is None else pick_device(device)
        new_dtype = self.dtype if dtype is None else pick_dtype(dtype, new_device)
        if new_device == self.device and new_dtype == self.dtype:
            return self
        if self.int8:
            raise ValueError(f"an int8 scorer stays on CPU in float32 (asked: {new_device}, "
                             f"{str(new_dtype).replace('torch.', '')}): load the model again without int8 to move it")
        self.device, self.dtype = new_device, new_dtype
        if self._batch_invariant_arg is None:
            self.batch_invariant = self.device.type == "cpu"
        self.channels_last = self.device.type == "cuda"
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = self.model.to(device=self.device, dtype=self.dtype, memory_format=fmt)
        self.preprocessor.to(self.device)
        self.localizer = self.preprocessor.localizer
        self._reset_optimization()
        return self

    @property
    def config(self) -> JointConfig:
        return self.model.config

    @property
    def dtype_name(self) -> str:
        """``float32``, ``bfloat16``, ...; ``float32+int8`` for an int8 scorer (its scores differ
        from float32's, so score files and resumed jobs keep the two apart)."""
        return str(self.dtype).replace("torch.", "") + ("+int8" if self.int8 else "")

    def info(self) -> Dict[str, Any]:
        cfg = self.config
        return {
            "name": cfg.name,
            "description": cfg.description,
            "source": self.source.describe() if self.source else "in memory",
            "technical_backbone": cfg.technical.backbone,
            "rationality_backbone": cfg.rationality.backbone,
            "parameters": self.float_parameters or self.model.num_parameters(),
            "device": str(self.device),
            "dtype": self.dtype_name,
            "localizer": repr(self.localizer),
            "cpu_graphs": "TorchScript (frozen)" if self._frozen is not None and not self._frozen.failed else "eager",
            "score_range": list(cfg.score_range),
            "fusion": f"N = {cfg.fusion.technical_weight:.4g}*T {_signed(cfg.fusion.rationality_weight)}*R"
                      + (f" {_signed(cfg.fusion.bias)}" if cfg.fusion.bias else "")
                      + (" -> logistic" if cfg.calibration else ""),
            "ranking": describe_by(cfg.ranking),   # what every face ranks by when no axis is named
        }

    def gflops(self) -> float:
        """The model's forward cost of one image in GFLOPs (:meth:`JointModel.gflops`)."""
        return self.model.gflops()

    # -- scoring --------------------------------------------------------------------------

    @property
    def limits(self) -> ImageLimits:
        """The per-image work bounds used when reading inputs (``max_side`` from the config)."""
        return ImageLimits(max_side=self.config.preprocess.max_side)

    def score(self, images: Any, batch_size: int = 16, progress: Optional[bool] = None,
              on_error: Literal["record", "raise"] = "record",
              callback: Optional[ProgressCallback] = None,
              layout: Literal["auto", "channels_first", "channels_last"] = "auto") -> ScoreResult:
        """Score images.

        Args:
            images: a path, PIL image, numpy array, tensor (``[B,3,H,W]``, ``[B,H,W,3]``, ...)
                or a list of these; any size, RGB/RGBA/grayscale.
            batch_size: images per forward pass (bounds memory).
            progress: show a tqdm bar (default: only for more than one batch on a terminal).
            on_error: ``"record"`` (default) gives unreadable images NaN scores and a message in
                ``result.errors``, with a warning; ``"raise"`` raises :class:`ScoringError`
                after scoring the others (the partial result is on the exception).
            callback: called as ``callback(done, total)`` after each batch; it may raise to
                stop early (ComfyUI's cancel uses this).
            layout: how 3-D / 4-D arrays and tensors are read: ``"auto"`` (the dimension that
                can hold 1, 3 or 4 channels; when both the first and the last can, torch tensors
                are read channels-first and numpy arrays channels-last, with a warning),
                ``"channels_first"`` or ``"channels_last"``.

        Degenerate images (nearly uniform or black, pure noise, too small) are scored but get a
        message in ``result.warnings`` and rank last in every selection (:meth:`ScoreResult.keep`).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
            raise TypeError(f"batch_size must be a positive integer, got {batch_size!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        batch_size = int(batch_size)
        if on_error not in ("record", "raise"):
            raise ValueError(f"on_error must be 'record' or 'raise', got {on_error!r}")
        check_layout(layout)
        items = collect_images(images, limits=self.limits, layout=layout)
        n = len(items)
        tech = torch.full((n,), float("nan"))
        rat = torch.full((n,), float("nan"))
        nat = torch.full((n,), float("nan"))
        errors = {i: it.error for i, it in enumerate(items) if not it.ok}
        todo = [i for i, it in enumerate(items) if it.ok]
        bar = self._progress_bar(len(todo), batch_size, progress)
        done = 0
        try:
            for start in range(0, len(todo), batch_size):
                idx = todo[start:start + batch_size]
                tb, rb, nb, errs = self._score_batch([items[i] for i in idx])
                for j, i in enumerate(idx):
                    if j in errs:
                        errors[i] = errs[j]
                    else:
                        tech[i], rat[i], nat[i] = tb[j], rb[j], nb[j]
                done += len(idx)
                if bar is not None:
                    bar.update(len(idx))
                if callback is not None:
                    callback(done, len(todo))
        finally:
            if bar is not None:
                bar.close()
        flagged = {i: it.warning for i, it in enumerate(items) if it.warning and i not in errors}
        result = ScoreResult(tech, rat, nat, [it.source for it in items], errors,
                             tuple(self.config.score_range), default_by=self.config.ranking,
                             warnings=flagged)
        if flagged:
            warnings.warn(f"{len(flagged)} of {n} image(s) flagged, ranked last: " + "; ".join(
                flagged[i] for i in sorted(flagged)[:5]) + (" ..." if len(flagged) > 5 else ""),
                FlaggedImageWarning, stacklevel=2)
        if errors:
            msg = f"{len(errors)} of {n} image(s) could not be scored: " + "; ".join(
                errors[i] for i in sorted(errors)[:5]) + (" ..." if len(errors) > 5 else "")
            if on_error == "raise":
                raise ScoringError(msg, result)
            warnings.warn(msg, stacklevel=2)
        return result

    __call__ = score

    def score_items(self, items: Sequence[ImageItem]) -> ScoreResult:
        """Score one batch of already-loaded :class:`ImageItem` s (what
        :func:`~joint_core.preprocess.images.load_one` gives); items that failed to load keep
        their error. The unit of work of :meth:`score_iter` and of the Ray engine's actors."""
        tech, rat, nat, errors = self._score_batch(items)
        flagged = {j: it.warning for j, it in enumerate(items) if it.warning and j not in errors}
        return ScoreResult(tech, rat, nat, [it.source for it in items], errors,
                           tuple(self.config.score_range), default_by=self.config.ranking,
                           warnings=flagged)

    def score_iter(self, inputs: Any, batch_size: int = 16, num_workers: Optional[int] = 0, prefetch: int = 2,
                   progress: Optional[bool] = None, total: Optional[int] = None,
                   layout: Literal["auto", "channels_first", "channels_last"] = "auto",
                   worker_nice: int = 0) -> Iterator[List[Dict[str, Any]]]:
        """Score a stream of images batch by batch, decoding in worker processes; yields each
        batch's records (as :meth:`ScoreResult.to_records`, with ``index`` counting from the start
        of ``inputs``), in input order.

        Memory does not grow with the number of images: files are opened lazily, at most
        ``num_workers * prefetch`` batches are decoded ahead, and nothing is kept after a batch is
        yielded. The scores are those of :meth:`score` for the same images, bit for bit on CPU.

        Args:
            inputs: an iterable (a generator is fine) of paths, in-memory images as :meth:`score`
                takes them, or :class:`~joint_core.stream.Sample` s - or a source from
                :func:`joint_core.stream.open_inputs` (folders, globs, lists, WebDataset tars,
                Parquet/CSV tables). A single path or image is one input.
            batch_size: images per forward pass.
            num_workers: decoding processes (0: decode in this process, each batch on every core
                before the model runs it; None: as `joint score`
                plans them from the model's cost and the cores, :func:`~joint_core.devices.plan_cpu`,
                with the model's threads set for the run and restored after it).
            prefetch: batches each worker decodes ahead.
            progress: a tqdm bar (default: on a terminal); ``total`` sets its length when known.
            layout: how in-memory arrays and tensors are read, as for :meth:`score`.
            worker_nice: lower the decoding workers' priority by this much (0: as this process).

        The per-image limits of :meth:`score` hold in the workers (:attr:`limits`); flagged
        images carry their message in the records' ``warning``.
        """
        nice, threads = worker_nice, None
        if num_workers is None:
            plan = plan_cpu(self.device, self.gflops() if self.device.type == "cpu" else None)
            num_workers, nice, threads = plan.workers, plan.nice, plan.threads
        if isinstance(inputs, (str, os.PathLike)) or _is_single_image(inputs):
            inputs = [inputs]
        elif hasattr(inputs, "samples"):
            inputs = inputs.samples()
        if total is None and hasattr(inputs, "__len__"):
            total = len(inputs)
        bar = self._progress_bar(total, 0, progress)
        done = 0
        saved_threads = torch.get_num_threads()
        try:
            if threads:
                torch.set_num_threads(threads)
            for items in iter_batches(inputs, batch_size, num_workers, prefetch, limits=self.limits,
                                      layout=check_layout(layout), worker_nice=nice):
                records = self.score_items(items).to_records()
                for r in records:
                    r["index"] += done
                done += len(records)
                if bar is not None:
                    bar.update(len(records))
                yield records
        finally:
            if threads:
                torch.set_num_threads(saved_threads)
            if bar is not None:
                bar.close()

    def model_inputs(self, images: Sequence[Tensor]) -> Tuple[Tensor, Tensor]:
        """The two branches' inputs ``(technical, rationality)`` for validated RGB ``[3, H, W]``
        images, as :meth:`score_tensors` feeds them to the model. A rationality head that reads
        only the technical branch's features (no rationality backbone: the v3 default, ``fast``)
        never reads its input, so that view (a resize of every image, ~12 % of the fast model's
        time) is not made: a ``[B, 3, 1, 1]`` placeholder keeps the batch size."""
        prepared = self.preprocessor.prepare(images)
        x_t = self.preprocessor.technical(prepared)
        if self.model.rationality.backbone is None:
            return x_t, x_t.new_zeros(x_t.shape[0], 3, 1, 1)
        return x_t, self.preprocessor.rationality(prepared)

    @torch.inference_mode()
    def score_tensors(self, images: Sequence[Tensor]) -> Dict[str, Tensor]:
        """Score already-validated RGB ``[3, H, W]`` images (uint8 or float in [0, 1]) in one
        batch; returns float32 tensors on the scorer's device. No error handling: for faces
        that validated their input themselves."""
        out = self._forward(*self.model_inputs(images))
        return {"technical": out.technical.float(), "rationality": out.rationality.float(),
                "naturalness": out.naturalness.float()}

    def _forward(self, x_t: Tensor, x_r: Tensor) -> JointOutput:
        x_t, x_r = x_t.to(self.dtype), x_r.to(self.dtype)
        if self.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
            x_r = x_r.contiguous(memory_format=torch.channels_last)
        if not self.batch_invariant or x_t.shape[0] <= 1:
            t, r = self._branches(x_t, x_r)
        else:
            pairs = [self._branches(x_t[i:i + 1], x_r[i:i + 1]) for i in range(x_t.shape[0])]
            t, r = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
        return JointOutput(technical=t, rationality=r, naturalness=self.model.fuse(t, r))

    def _branches(self, x_t: Tensor, x_r: Tensor):
        if self._frozen is not None:
            return self._frozen(x_t, x_r)
        out = self.model(x_t, x_r)
        return out.technical, out.rationality

    def _score_batch(self, items: Sequence[ImageItem]) -> Tuple[Tensor, Tensor, Tensor, Dict[int, str]]:
        """Scores of one chunk (NaN where failed) and the errors by position in the chunk: items
        that failed to load keep their error, an image whose scoring fails is retried alone,
        a non-finite score is an error."""
        n = len(items)
        tech, rat, nat = (torch.full((n,), float("nan")) for _ in range(3))
        errors = {j: it.error for j, it in enumerate(items) if not it.ok}
        ok = [j for j, it in enumerate(items) if it.ok]
        if not ok:
            return tech, rat, nat, errors
        tb, rb, nb = self._score_items([items[j] for j in ok], errors, ok)
        finite = (torch.isfinite(tb) & torch.isfinite(rb) & torch.isfinite(nb)).tolist()
        for m, j in enumerate(ok):
            if j in errors:
                continue
            if not finite[m]:
                errors[j] = f"{items[j].source}: the model produced a non-finite score" + (
                    f" (dtype {str(self.dtype).replace('torch.', '')}: an overflow? try dtype=torch.float32)"
                    if self.dtype in (torch.float16, torch.bfloat16) else
                    " in float32 (the model's weights or this input give NaN or infinity)")
                continue
            tech[j], rat[j], nat[j] = tb[m], rb[m], nb[m]
        return tech, rat, nat, errors

    @torch.inference_mode()
    def _score_items(self, batch: List[ImageItem], errors: Dict[int, str], idx: List[int]):
        """Score one chunk; an image that fails inside preprocessing is retried alone so that
        it does not take the others down."""
        try:
            s = self.score_tensors([it.tensor for it in batch])
            return s["technical"].cpu(), s["rationality"].cpu(), s["naturalness"].cpu()
        except Exception as e:  # noqa: BLE001 - retried alone below; one image never loses the others
            if _is_oom(e) and self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(batch) == 1:
                errors[idx[0]] = f"{batch[0].source}: scoring failed ({first_line(e)})"
                nan = torch.full((1,), float("nan"))
                return nan, nan, nan
        outs = [self._score_items([it], errors, [i]) for it, i in zip(batch, idx)]
        return tuple(torch.cat([o[k] for o in outs]) for k in range(3))

    @staticmethod
    def _progress_bar(total: Optional[int], batch_size: int, progress: Optional[bool], initial: int = 0):
        """A tqdm bar (images/s and ETA) on stderr; by default only on a terminal and for more
        than one batch (``total`` None: length unknown)."""
        if progress is None:
            progress = (total is None or total > batch_size) and sys.stderr.isatty()
        if not progress:
            return None

        return tqdm(total=total, initial=initial, desc="scoring", unit="img", dynamic_ncols=True,
                    smoothing=0.05)


def _is_single_image(obj: Any) -> bool:
    return isinstance(obj, (Image.Image, np.ndarray, torch.Tensor))


def _signed(v: float) -> str:
    return f"{'-' if v < 0 else '+'} {abs(v):.4g}"


def _is_oom(e: BaseException) -> bool:
    return "out of memory" in str(e).lower()
