"""Start ComfyUI's node system in this process (no server) and import this pack as ComfyUI loaded it."""
from __future__ import annotations

import importlib
import importlib.util
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _comfy_host():
    spec = importlib.util.spec_from_file_location("imagic_bench_comfy_host", ROOT / "cli" / "comfy_host.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def boot(cpu: bool):
    """Boot the ComfyUI found as the README says; returns a function ``pack("nodes.x")`` -> the pack's module."""
    # diffusers decides once, at import, whether torchvision exists: import it before the tests' stand-in
    # for torchvision (which ComfyUI's import needs where torchvision is not installed) is on sys.path.
    import diffusers.models.unets.unet_2d_condition
    import diffusers.schedulers.scheduling_ddpm  # noqa: F401

    host = _comfy_host()
    path = host.find_comfyui()
    if path is None:
        sys.exit("no ComfyUI found: set COMFYUI_PATH or clone ComfyUI to ~/comfy/ComfyUI")
    stubs = [str(ROOT / "tests" / "stubs")] if importlib.util.find_spec("torchvision") is None else []
    name = host.boot(path, Path(tempfile.mkdtemp(prefix="imagic_bench_")), cpu=cpu, extra_sys_path=stubs)
    return lambda sub: importlib.import_module(f"{name}.{sub}")
