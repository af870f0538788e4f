"""ComfyUI entry point for a clone of this repository in ``ComfyUI/custom_nodes/``.

ComfyUI-Manager, comfy-cli and the Comfy Registry install a node pack by putting the
repository there and running ``pip install -r requirements.txt``; joint itself is not
pip-installed then. ComfyUI imports this file, which imports ``joint_core`` and
``comfyui_joint`` from this checkout - registered under their own names, without putting the
checkout on ``sys.path`` (so its ``tests`` or ``train`` cannot shadow anything) - and
re-exports the node pack. A ``joint_core`` that is already imported is kept as it is.
"""

import importlib.util
import logging
import os
import sys

_ROOT = os.path.dirname(os.path.abspath(__file__))


def _import_from_checkout(name):
    module = sys.modules.get(name)
    if module is not None:
        where = os.path.dirname(os.path.abspath(getattr(module, "__file__", "") or ""))
        if where != os.path.join(_ROOT, name):
            logging.getLogger("comfyui_joint").info("joint: using the %s already imported from %s", name, where)
        return module
    location = os.path.join(_ROOT, name)
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(location, "__init__.py"), submodule_search_locations=[location])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]
        raise
    return module


_import_from_checkout("joint_core")
_pack = _import_from_checkout("comfyui_joint")

NODE_CLASS_MAPPINGS = _pack.NODE_CLASS_MAPPINGS
NODE_DISPLAY_NAME_MAPPINGS = _pack.NODE_DISPLAY_NAME_MAPPINGS
WEB_DIRECTORY = "./comfyui_joint/web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
