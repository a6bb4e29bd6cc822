"""ComfyUI booted in this process for a benchmark: cli/comfy_host.py with the test stand-ins, folders in a
temporary directory (or ``base``). The one way a benchmark boots (run them with ``python cli/bench.py NAME``)."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from ..cli import comfy_host


def boot(cpu: bool = True, base: Path | None = None, reference: bool = False):
    """Boot the ComfyUI found as the README says; returns ``comfy_host.pack_module`` ("nodes.x" -> the module).
    ``reference``: the diffusers-style reference implementation will run too (bench/reference.py)."""
    if reference:
        # diffusers decides once, at import, whether torchvision exists: import it before the stand-in for
        # torchvision (which ComfyUI's import needs where torchvision is not installed) can be imported.
        import diffusers.models.unets.unet_2d_condition
        import diffusers.schedulers.scheduling_ddpm  # noqa: F401

    host = comfy_host.find_comfyui()
    if host is None:
        sys.exit(comfy_host.NO_HOST)
    comfy_host.boot(host, base or Path(tempfile.mkdtemp(prefix="imagic_bench_")), cpu=cpu, stand_ins=True)
    return comfy_host.pack_module

