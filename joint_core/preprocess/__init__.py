"""Image -> tensors, batched on the device: input decoding, partition, localizers, LFM."""

from .images import IMAGE_EXTENSIONS, ImageInputError, ImageItem, collect_images, expand_paths, load_image
from .localizer import ArtifactLocalizer, LocalizerError, NoLocalizer, TorchScriptLocalizer, build_localizer
from .lowfreq import ambrosio_tortorelli, low_frequency_map
from .partition import (apply_permutation, cells_with_artifacts, neighbour_table, partition_permutation,
                        partition_priorities, patch_partition)
from .pipeline import Preprocessor

__all__ = [
    "IMAGE_EXTENSIONS", "ImageInputError", "ImageItem", "collect_images", "expand_paths", "load_image",
    "ArtifactLocalizer", "LocalizerError", "NoLocalizer", "TorchScriptLocalizer", "build_localizer",
    "ambrosio_tortorelli", "low_frequency_map",
    "apply_permutation", "cells_with_artifacts", "neighbour_table", "partition_permutation",
    "partition_priorities", "patch_partition", "Preprocessor",
]
