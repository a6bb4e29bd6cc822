"""Import this pack the way ComfyUI's loader names it, without ComfyUI (the pack's __init__ is light)."""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = str(ROOT).replace(".", "_x_")  # = nodes.load_custom_node's sys.modules name for this folder


def pack():
    if NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(NAME, ROOT / "__init__.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[NAME] = module
        spec.loader.exec_module(module)
    return sys.modules[NAME]


def sub(name: str):
    """``sub("core.training")`` -> the pack's module, the same object the loaded nodes use."""
    pack()
    return importlib.import_module(f"{NAME}.{name}")
