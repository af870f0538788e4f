"""Image -> tensors, batched on the device: input decoding, partition, localizers, LFM."""

from .images import (IMAGE_EXTENSIONS, MAX_ASPECT, MAX_PIXELS, MIN_SIDE, AmbiguousLayoutWarning, FlaggedImageWarning,
                     ImageInputError, ImageItem, ImageLimits, UnreadablePath, collect_images, degenerate_reason,
                     expand_paths, load_image, load_items)
from .localizer import ArtifactLocalizer, LocalizerError, NoLocalizer, TorchScriptLocalizer, build_localizer
from .lowfreq import ambrosio_tortorelli, low_frequency_map
from .partition import (apply_permutation, cells_with_artifacts, neighbour_table, partition_permutation,
                        partition_priorities, patch_partition)
from .pipeline import Preprocessor

__all__ = [
    "IMAGE_EXTENSIONS", "MAX_ASPECT", "MAX_PIXELS", "MIN_SIDE", "AmbiguousLayoutWarning", "FlaggedImageWarning",
    "ImageInputError", "ImageItem", "ImageLimits", "UnreadablePath", "collect_images", "degenerate_reason",
    "expand_paths", "load_image", "load_items",
    "ArtifactLocalizer", "LocalizerError", "NoLocalizer", "TorchScriptLocalizer", "build_localizer",
    "ambrosio_tortorelli", "low_frequency_map",
    "apply_permutation", "cells_with_artifacts", "neighbour_table", "partition_permutation",
    "partition_priorities", "patch_partition", "Preprocessor",
]
