"""joint_core: the JOINT / JOINT++ naturalness scorer for AI-generated images (AGIN paper).

One call from images to three scores - technical quality, rationality, overall naturalness::

    from joint_core import NaturalnessScorer
    scorer = NaturalnessScorer.from_pretrained()     # $JOINT_MODEL, user cache, shipped default
    result = scorer.score(["a.png", "b.png"])
    result.to_records(); result.ranking(by="naturalness")
"""

from ._version import __version__
from .checkpoint import (CheckpointError, ModelEntry, NoModelError, default_model_dir, list_models, load_model,
                         resolve_model, save_model)
from .config import (BranchConfig, CalibrationConfig, ConfigError, FusionConfig, JointConfig,
                     LowFrequencyConfig, PreprocessConfig, RationalityInputConfig, TechnicalInputConfig,
                     get_preset, list_presets, register_preset)
from .model import JointModel, JointOutput, logistic4
from .official import convert_official
from .devices import pick_device, pick_dtype
from .errors import JointError
from .preprocess.images import AmbiguousLayoutWarning, FlaggedImageWarning, ImageInputError, ImageLimits
from .result import AXES, ScoreResult, ScoringError, check_by, describe_by
from .scorer import NaturalnessScorer

__all__ = [
    "AXES", "AmbiguousLayoutWarning", "BranchConfig", "CalibrationConfig", "CheckpointError", "ConfigError",
    "FlaggedImageWarning", "FusionConfig", "ImageInputError", "ImageLimits", "JointConfig", "JointError", "JointModel",
    "JointOutput", "LowFrequencyConfig", "ModelEntry", "NaturalnessScorer", "NoModelError", "PreprocessConfig",
    "RationalityInputConfig", "ScoreResult", "ScoringError", "TechnicalInputConfig", "check_by",
    "convert_official", "default_model_dir", "describe_by", "get_preset", "list_models", "list_presets",
    "load_model", "logistic4", "pick_device", "pick_dtype", "register_preset", "resolve_model", "save_model",
    "__version__",
]
