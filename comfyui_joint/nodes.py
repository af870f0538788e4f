"""ComfyUI nodes (V1 API): load a naturalness model, score, filter, keep the best of N, preview.

Images are ComfyUI ``IMAGE`` tensors ``[B, H, W, C]``, float in [0, 1]. All scoring goes
through ``joint_core.NaturalnessScorer`` (via :class:`host.NaturalnessModel`); these
classes only check inputs, pick images and latents by the scores, and format what is shown.

Empty results: an output that would hold no image (nothing passed the threshold, every image
failed) is an ``ExecutionBlocker`` by default - ComfyUI then skips the nodes fed by it, without
an error, and the rest of the workflow runs. ``if_empty = "error"`` stops the workflow instead.
(An empty ``[0, H, W, C]`` batch is not passed on: SaveImage and many other nodes crash on it.)
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from joint_core.ranking import AXES, DEFAULT_BY, check_axis, check_weights, describe_by
from joint_core.result import check_threshold

from . import annotate, host
from .host import NaturalnessModel

MODEL_TYPE = "NATURALNESS_MODEL"
CATEGORY = "image/naturalness"
IF_EMPTY = ["skip downstream", "error"]
MIX = "weighted mix"
MODEL_DEFAULT = "model default"

_MODEL_INPUT = (MODEL_TYPE, {"tooltip": "From 'Load Naturalness Model'."})
_BATCH_SIZE = ("INT", {"default": 8, "min": 1, "max": 256, "advanced": True,
                       "tooltip": "Images per forward pass: bounds memory and sets how often the "
                                  "progress bar moves and cancel is checked. Scores do not depend on it."})
_IF_EMPTY = (IF_EMPTY, {"default": IF_EMPTY[0],
                        "tooltip": "When an output would hold no image: 'skip downstream' makes ComfyUI "
                                   "skip the nodes fed by it (no error, the rest runs); 'error' stops "
                                   "the workflow."})


# --------------------------------------------------------------------------------------------
# input checks and formatting
# --------------------------------------------------------------------------------------------


def _check_model(model: Any, node: str) -> NaturalnessModel:
    if not isinstance(model, NaturalnessModel):
        raise TypeError(f"{node}: input 'naturalness_model' must come from 'Load Naturalness Model', "
                        f"got {type(model).__name__}")
    return model


def _check_images(images: Any, node: str, name: str = "images") -> Tensor:
    """A ComfyUI IMAGE ``[B, H, W, C]`` (a single ``[H, W, C]`` image is accepted)."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{node}: input '{name}' must be an IMAGE tensor, got {type(images).__name__}")
    if images.device.type == "meta" or images.layout != torch.strided or getattr(images, "is_nested", False):
        what = "on the meta device (no pixel values)" if images.device.type == "meta" else \
            f"a {str(images.layout).replace('torch.', '')} tensor"
        raise ValueError(f"{node}: input '{name}' is {what}; an IMAGE must be an ordinary tensor")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{node}: input '{name}' must be an IMAGE [batch, height, width, channels] "
                         f"with 1, 3 or 4 channels, got shape {tuple(images.shape)}")
    if images.shape[0] and (images.shape[1] == 0 or images.shape[2] == 0):
        raise ValueError(f"{node}: input '{name}' has images without pixels (shape {tuple(images.shape)}: "
                         f"{images.shape[2]}x{images.shape[1]})")
    if not images.is_floating_point():
        raise ValueError(f"{node}: input '{name}' must hold floats in [0, 1], got {images.dtype}")
    return images


def _bchw(images: Tensor) -> Tensor:
    # channels first: unambiguous for joint_core even when height or width is 1, 3 or 4
    return images.permute(0, 3, 1, 2)


def _single(value: Any, name: str, node: str) -> Any:
    """One value from an INPUT_IS_LIST input (every element must be the same)."""
    if not isinstance(value, list):
        return value
    if not value:
        raise ValueError(f"{node}: input '{name}' is empty")
    first = value[0]
    if any(v is not first and v != first for v in value[1:]):
        raise ValueError(f"{node}: input '{name}' got {len(value)} different values; connect a single one")
    return first


def _whole(value: Any, name: str, node: str, minimum: int = 1) -> int:
    """An INT input as an int: a whole number >= ``minimum`` (``2.0`` is 2; ``1.5``, ``"8"``,
    ``True`` and NaN are errors naming the node and the input)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not (math.isfinite(value) and value.is_integer())):
        raise ValueError(f"{node}: input '{name}' must be a whole number, got {value!r}")
    if value < minimum:
        raise ValueError(f"{node}: input '{name}' must be >= {minimum}, got {value!r}")
    return int(value)


def _fmt(v: float) -> str:
    return "  failed" if math.isnan(v) else f"{v:8.3f}"


def _table(result, sizes: Sequence[Tuple[int, int]], indices: Optional[Sequence[int]] = None,
           mark: Optional[Sequence[str]] = None) -> List[str]:
    lines = ["   #   width x height   technical  rationality  naturalness"]
    for row in range(len(result)):
        i = indices[row] if indices is not None else row
        w, h = sizes[row]
        t, r, n = (float(getattr(result, ax)[row]) for ax in AXES)
        tail = f"  {mark[row]}" if mark is not None and mark[row] else ""
        lines.append(f"{i:>4}  {w:>6} x {h:<6}  {_fmt(t)}     {_fmt(r)}     {_fmt(n)}{tail}")
    for row, msg in sorted(result.errors.items()):
        i = indices[row] if indices is not None else row
        lines.append(f"image {i} failed: {msg}")
    for row, msg in sorted(result.warnings.items()):
        i = indices[row] if indices is not None else row
        prefix = f"{result.sources[row]}: "
        if row not in result.errors:
            lines.append(f"image {i}: {msg[len(prefix):] if msg.startswith(prefix) else msg}")
    return lines


def _float_list(t: Tensor) -> List[float]:
    return [float(v) for v in t.tolist()]


def _empty(if_empty: str, node: str, what: str) -> Any:
    if if_empty == "error":
        raise ValueError(f"{node}: {what} (if_empty = 'error')")
    if if_empty not in IF_EMPTY:
        raise ValueError(f"{node}: if_empty must be one of {IF_EMPTY}, got {if_empty!r}")
    return host.blocker(None)


# --------------------------------------------------------------------------------------------
# nodes
# --------------------------------------------------------------------------------------------


class LoadNaturalnessModel:
    DESCRIPTION = ("Loads a JOINT naturalness model from ComfyUI/models/naturalness/ (a folder with "
                   "config.json + model.safetensors; extra_model_paths.yaml can add folders under "
                   "'naturalness:'). The same model is loaded once and shared. To use the authors' "
                   "checkpoint, convert it: python -m joint_core convert JOINT_2024.pth "
                   "ComfyUI/models/naturalness/joint-official")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (host.model_choices(), {
                "tooltip": "A model folder from models/naturalness/, or the default model shipped with joint."}),
            "device": (host.DEVICE_CHOICES, {
                "default": "default", "tooltip": "'default': ComfyUI's device; the model waits on ComfyUI's "
                                                 "offload device (usually the CPU) between runs."}),
            "dtype": (host.DTYPE_CHOICES, {
                "default": "default", "tooltip": "'default': bf16 (or fp16) on CUDA GPUs, fp32 elsewhere."}),
        }}

    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("naturalness_model",)
    OUTPUT_TOOLTIPS = ("A JOINT naturalness scorer for the Score / Filter / Best of N / Preview nodes.",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, model_name: str, device: str = "default", dtype: str = "default"):
        return (host.load_naturalness_model(model_name, device, dtype),)

    @classmethod
    def IS_CHANGED(cls, model_name: str, device: str = "default", dtype: str = "default"):
        try:
            return host.model_signature(host.resolve_choice(model_name)[1])
        except Exception as e:  # reported by load() with its full message
            return f"unavailable: {e}"


class ScoreNaturalness:
    DESCRIPTION = ("Scores every image for technical quality, rationality and overall naturalness "
                   "(1-5, higher is better) and shows the scores on the node. Image lists of "
                   "different sizes are scored together, indices run over the whole list.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"naturalness_model": _MODEL_INPUT,
                             "images": ("IMAGE", {"tooltip": "Images to score (a batch or a list)."})},
                "optional": {"batch_size": _BATCH_SIZE}}

    INPUT_IS_LIST = True
    RETURN_TYPES = ("FLOAT", "FLOAT", "FLOAT", "STRING")
    RETURN_NAMES = ("technical", "rationality", "naturalness", "report")
    OUTPUT_IS_LIST = (True, True, True, False)
    OUTPUT_TOOLTIPS = ("Technical score of each image (NaN where it failed).",
                       "Rationality score of each image.", "Naturalness score of each image.",
                       "The table shown on the node.")
    OUTPUT_NODE = True
    FUNCTION = "score"
    CATEGORY = CATEGORY

    def score(self, naturalness_model, images, batch_size=8):
        node = "Score Naturalness"
        model = _check_model(_single(naturalness_model, "naturalness_model", node), node)
        batch_size = _whole(_single(batch_size, "batch_size", node), "batch_size", node)
        batches = [_check_images(im, node) for im in (images if isinstance(images, list) else [images])]
        batches = [b for b in batches if b.shape[0] > 0]
        if not batches:
            report = "no images to score"
            nothing = host.blocker(None)
            return {"ui": {"text": [report], "scores": []}, "result": ([nothing], [nothing], [nothing], report)}
        sizes = [(int(b.shape[2]), int(b.shape[1])) for b in batches for _ in range(b.shape[0])]
        result = model.score([_bchw(b) for b in batches], batch_size=batch_size)
        lines = [f"{result.summary()} - {model.describe()}"] + _table(result, sizes)
        if len(result) - len(result.errors) > 1:
            best = result.ranking("naturalness")[0]
            lines.append(f"best naturalness: image {best} ({float(result.naturalness[best]):.3f})")
        report = "\n".join(lines)
        records = [{"index": rec["index"], "width": w, "height": h,
                    **{ax: rec[ax] for ax in AXES}, "error": rec["error"], "warning": rec["warning"]}
                   for rec, (w, h) in zip(result.to_records(), sizes)]
        return {"ui": {"text": [report], "scores": records},
                "result": (_float_list(result.technical), _float_list(result.rationality),
                           _float_list(result.naturalness), report)}


class FilterByNaturalness:
    DESCRIPTION = ("Keeps the images whose score on the chosen axis is at least the threshold "
                   "(in their original order); the others, images that could not be scored, and "
                   "flagged degenerate images (flat, black, pure noise, tiny) go to 'rejected'. "
                   "An empty side skips the nodes fed by it (see if_empty).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "naturalness_model": _MODEL_INPUT,
            "images": ("IMAGE", {"tooltip": "The batch to filter."}),
            "axis": (list(AXES), {"default": DEFAULT_BY, "tooltip": "Which score to compare."}),
            "threshold": ("FLOAT", {"default": 3.0, "min": -100.0, "max": 100.0, "step": 0.01,
                                    "tooltip": "Keep images scoring at least this (scores are 1-5 MOS)."}),
        }, "optional": {"if_empty": _IF_EMPTY, "batch_size": _BATCH_SIZE}}

    RETURN_TYPES = ("IMAGE", "IMAGE", "FLOAT", "FLOAT")
    RETURN_NAMES = ("kept", "rejected", "kept_scores", "rejected_scores")
    OUTPUT_IS_LIST = (False, False, True, True)
    OUTPUT_TOOLTIPS = ("Images scoring >= threshold, in input order.", "The other images.",
                       "Their scores on the chosen axis.", "Scores of the rejected images (NaN: failed).")
    FUNCTION = "filter"
    CATEGORY = CATEGORY

    def filter(self, naturalness_model, images, axis, threshold, if_empty="skip downstream", batch_size=8):
        node = "Filter by Naturalness"
        model = _check_model(naturalness_model, node)
        images = _check_images(images, node)
        try:
            check_axis(axis)
            threshold = check_threshold(threshold)
        except ValueError as e:
            raise ValueError(f"{node}: {e}") from None
        if threshold is None:   # the keep() API's "no threshold"; the node's FLOAT input needs a number
            raise ValueError(f"{node}: input 'threshold' must be a number, got None")
        if if_empty not in IF_EMPTY:
            raise ValueError(f"{node}: if_empty must be one of {IF_EMPTY}, got {if_empty!r}")
        batch_size = _whole(batch_size, "batch_size", node)
        result = model.score([_bchw(images)], batch_size=batch_size) if images.shape[0] else None
        n = int(images.shape[0])
        scores = result.scores(axis) if result is not None else torch.zeros(0)
        keep = result.keep(axis, threshold=threshold) if result is not None else []
        kept_set = set(keep)
        reject = [i for i in range(n) if i not in kept_set]
        outputs: List[Any] = []
        for side, idx in (("kept", keep), ("rejected", reject)):
            if idx:
                sel = torch.tensor(idx, dtype=torch.long, device=images.device)
                outputs.append((images.index_select(0, sel), _float_list(scores[idx])))
            else:
                nothing = _empty(if_empty, node, f"no image is {side} ({axis} >= {threshold:g})")
                outputs.append((nothing, [nothing]))
        (kept, kept_scores), (rejected, rejected_scores) = outputs
        lines = [f"kept {len(keep)} of {n} ({axis} >= {threshold:g}), rejected {len(reject)}"
                 + ("" if keep and reject else "; the empty side skips its downstream nodes")]
        if result is not None:
            sizes = [(int(images.shape[2]), int(images.shape[1]))] * n
            marks = ["kept" if i in kept_set else "rejected (flagged)" if i in result.warnings else "rejected"
                     for i in range(n)]
            lines += _table(result, sizes, mark=marks)
        return {"ui": {"text": ["\n".join(lines)]},
                "result": (kept, rejected, kept_scores, rejected_scores)}


class BestOfN:
    DESCRIPTION = ("Keeps the K best images of a batch by one score or a weighted mix, best first, "
                   "with their indices in the batch; flagged degenerate images (flat, black, pure noise, "
                   "tiny) rank after all others. Connect the LATENT that was decoded into these "
                   "images to get the kept latents too (for a second pass).")

    @classmethod
    def INPUT_TYPES(cls):
        w = {"min": 0.0, "max": 100.0, "step": 0.05}
        return {"required": {
            "naturalness_model": _MODEL_INPUT,
            "images": ("IMAGE", {"tooltip": "The N candidates (one batch)."}),
            "k": ("INT", {"default": 1, "min": 1, "max": 4096, "tooltip": "How many to keep."}),
            "rank_by": ([MODEL_DEFAULT] + list(AXES) + [MIX], {
                "default": MODEL_DEFAULT,
                "tooltip": "'model default': the ranking the model was made for (its config's 'ranking'); "
                           "a score; or the weighted mean of the three with the weights below."}),
        }, "optional": {
            "latent": ("LATENT", {"tooltip": "Optional: the latent batch these images were decoded from."}),
            "technical_weight": ("FLOAT", {"default": 0.5, **w, "tooltip": "Weight of technical in the mix."}),
            "rationality_weight": ("FLOAT", {"default": 0.5, **w, "tooltip": "Weight of rationality in the mix."}),
            "naturalness_weight": ("FLOAT", {"default": 0.0, **w, "tooltip": "Weight of naturalness in the mix."}),
            "if_empty": _IF_EMPTY,
            "batch_size": _BATCH_SIZE,
        }}

    RETURN_TYPES = ("IMAGE", "LATENT", "INT", "FLOAT")
    RETURN_NAMES = ("images", "latent", "indices", "scores")
    OUTPUT_IS_LIST = (False, False, True, True)
    OUTPUT_TOOLTIPS = ("The K best images, best first.", "Their latents, in the same order.",
                       "Their positions in the input batch.", "Their ranking scores.")
    FUNCTION = "best_of_n"
    CATEGORY = CATEGORY

    def best_of_n(self, naturalness_model, images, k, rank_by, latent=None, technical_weight=0.5,
                  rationality_weight=0.5, naturalness_weight=0.0, if_empty="skip downstream", batch_size=8):
        node = "Best of N"
        model = _check_model(naturalness_model, node)
        images = _check_images(images, node)
        n = int(images.shape[0])
        k = _whole(k, "k", node)
        batch_size = _whole(batch_size, "batch_size", node)
        if if_empty not in IF_EMPTY:
            raise ValueError(f"{node}: if_empty must be one of {IF_EMPTY}, got {if_empty!r}")
        if rank_by == MIX:
            try:
                by: Any = check_weights({"technical": technical_weight, "rationality": rationality_weight,
                                         "naturalness": naturalness_weight})
            except ValueError as e:
                raise ValueError(f"{node}: {e}") from None
        elif rank_by == MODEL_DEFAULT:
            by = None
        elif rank_by in AXES:
            by = rank_by
        else:
            raise ValueError(f"{node}: rank_by must be one of {[MODEL_DEFAULT] + list(AXES) + [MIX]}, "
                             f"got {rank_by!r}")
        if latent is not None:
            _check_latent(latent, n, node)
        result = model.score([_bchw(images)], batch_size=batch_size) if n else None
        order = result.keep(by, k=k) if result is not None else []
        if not order:
            nothing = _empty(if_empty, node, "no image could be scored" if n else "the batch is empty")
            return {"ui": {"text": [f"nothing to keep: {n} image(s), none scored"]},
                    "result": (nothing, nothing, [nothing], [nothing])}
        sel = torch.tensor(order, dtype=torch.long, device=images.device)
        ranked = result.scores(by)
        label = describe_by(result.resolve_by(by))
        out_latent = _select_latent(latent, order, n) if latent is not None else host.blocker(
            f"{node}: its 'latent' output needs the 'latent' input connected (the LATENT decoded into the images)")
        short = f" (asked for {k}, only {len(order)} scored)" if len(order) < k else ""
        lines = [f"kept {len(order)} of {n} by {label}{short}"]
        lines.append("rank  index  " + (label if isinstance(result.resolve_by(by), str) else "mix"))
        lines += [f"{r + 1:>4}  {i:>5}  {float(ranked[i]):.3f}" for r, i in enumerate(order)]
        sizes = [(int(images.shape[2]), int(images.shape[1]))] * n
        lines += _table(result, sizes, mark=[(f"rank {order.index(i) + 1}" if i in order else "")
                                             + (" (flagged)" if i in result.warnings else "") for i in range(n)])
        return {"ui": {"text": ["\n".join(lines)]},
                "result": (images.index_select(0, sel), out_latent, list(order), _float_list(ranked[order]))}


def _check_latent(latent: Any, n: int, node: str) -> None:
    if not isinstance(latent, dict) or not isinstance(latent.get("samples"), Tensor):
        raise TypeError(f"{node}: input 'latent' must be a LATENT (a dict with 'samples'), got {type(latent).__name__}")
    b = int(latent["samples"].shape[0])
    if b != n:
        raise ValueError(f"{node}: input 'latent' has {b} samples but 'images' has {n} images; connect "
                         "the LATENT that was decoded into these images")


def _select_latent(latent: Dict[str, Any], order: Sequence[int], n: int) -> Dict[str, Any]:
    """The latents at ``order`` (as core LatentFromBatch does: noise masks follow, and
    ``batch_index`` keeps the original positions so a second pass gets the same noise)."""
    out = dict(latent)
    samples = latent["samples"]
    sel = torch.tensor(list(order), dtype=torch.long, device=samples.device)
    out["samples"] = samples.index_select(0, sel)
    mask = latent.get("noise_mask")
    if isinstance(mask, Tensor) and mask.dim() >= 1 and mask.shape[0] > 1:
        if mask.shape[0] < n:
            mask = mask.repeat(math.ceil(n / mask.shape[0]), *([1] * (mask.dim() - 1)))[:n]
        out["noise_mask"] = mask.index_select(0, sel.to(mask.device))
    original = latent.get("batch_index")
    out["batch_index"] = [original[i] for i in order] if original is not None else list(order)
    return out


class PreviewNaturalness:
    DESCRIPTION = "Shows the images with their three scores written on them, and outputs the annotated images."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"naturalness_model": _MODEL_INPUT,
                             "images": ("IMAGE", {"tooltip": "Images to score and annotate."})},
                "optional": {"batch_size": _BATCH_SIZE}}

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("annotated",)
    OUTPUT_TOOLTIPS = ("The images with 'N  T  R' scores drawn across the top.",)
    OUTPUT_NODE = True
    FUNCTION = "preview"
    CATEGORY = CATEGORY

    def preview(self, naturalness_model, images, batch_size=8):
        node = "Preview Naturalness"
        model = _check_model(naturalness_model, node)
        images = _check_images(images, node)
        if images.shape[0] == 0:
            return {"ui": {"images": [], "text": ["no images"]}, "result": (host.blocker(None),)}
        result = model.score([_bchw(images)], batch_size=_whole(batch_size, "batch_size", node))
        captions = []
        for i in range(len(result)):
            if i in result.errors:
                captions.append(f"#{i} failed")
            else:
                flag = "  flagged" if i in result.warnings else ""
                captions.append(f"#{i} N {float(result.naturalness[i]):.2f}  T {float(result.technical[i]):.2f}"
                                f"  R {float(result.rationality[i]):.2f}{flag}")
        annotated = annotate.draw_captions(images, captions)
        previews = host.save_previews(annotate.to_pil(annotated))
        sizes = [(int(images.shape[2]), int(images.shape[1]))] * len(result)
        report = "\n".join([f"{result.summary()} - {model.describe()}"] + _table(result, sizes))
        return {"ui": {"images": previews, "text": [report]}, "result": (annotated.to(images.device),)}


NODE_CLASS_MAPPINGS = {
    "LoadNaturalnessModel": LoadNaturalnessModel,
    "ScoreNaturalness": ScoreNaturalness,
    "FilterByNaturalness": FilterByNaturalness,
    "NaturalnessBestOfN": BestOfN,
    "PreviewNaturalness": PreviewNaturalness,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadNaturalnessModel": "Load Naturalness Model",
    "ScoreNaturalness": "Score Naturalness",
    "FilterByNaturalness": "Filter by Naturalness",
    "NaturalnessBestOfN": "Best of N (Naturalness)",
    "PreviewNaturalness": "Preview Naturalness",
}
