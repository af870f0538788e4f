"""ComfyUI nodes for JOINT naturalness scores: load a model, score, filter, best of N, preview.

This package is a complete ComfyUI node pack (``NODE_CLASS_MAPPINGS``, ``WEB_DIRECTORY`` and
``example_workflows/`` inside it), so a pip-installed copy can be linked into
``ComfyUI/custom_nodes/``; a clone of the whole repository is loaded through the repository's
root ``__init__.py``, which re-exports what is defined here. Importing it needs neither ComfyUI
nor joint's diffusers / training extras; inside ComfyUI it registers the ``naturalness`` model
folder.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from .host import register_model_folder

WEB_DIRECTORY = "./web"

register_model_folder()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
