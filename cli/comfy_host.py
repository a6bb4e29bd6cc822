"""Find a ComfyUI checkout and start its node system in this process (no server, no browser).

Used by the headless command and by the tests. The search order is the one the README documents:
``$COMFYUI_PATH``, then the ``custom_nodes/<pack>`` layout (two folders up from the pack), then
``~/comfy/ComfyUI`` (comfy-cli's default place).
"""
from __future__ import annotations

import asyncio
import importlib
import os
import sys
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]


def is_comfyui(path: Path) -> bool:
    return (path / "comfy" / "model_patcher.py").is_file() and (path / "nodes.py").is_file()


def find_comfyui() -> Path | None:
    """Return the ComfyUI checkout to use, or None when there is none."""
    env = os.environ.get("COMFYUI_PATH")
    if env:
        # An explicit path that is wrong is an error, not a reason to look elsewhere.
        return Path(env).expanduser().resolve() if is_comfyui(Path(env).expanduser()) else None
    for candidate in (PACK_DIR.parents[1], Path.home() / "comfy" / "ComfyUI"):
        if is_comfyui(candidate):
            return candidate.resolve()
    return None


def pack_module_name(pack_dir: Path = PACK_DIR) -> str:
    """The name ComfyUI's loader gives a custom-node folder in sys.modules."""
    return str(pack_dir).replace(".", "_x_")


_BOOTED: dict = {}


def boot(host: Path, base_dir: Path, *, cpu: bool = True, extra_sys_path: list[str] | None = None) -> str:
    """Import ComfyUI from ``host``, point its folders at ``base_dir`` and load the built-in and Imagic nodes.

    Returns the sys.modules name of this pack as ComfyUI loaded it. Idempotent within one process.
    """
    if _BOOTED:
        return _BOOTED["pack"]
    host = Path(host).resolve()
    for p in [str(host)] + list(extra_sys_path or []):
        if p not in sys.path:
            sys.path.insert(0, p)
    # ComfyUI parses its own command line at import; keep ours out of it.
    argv, sys.argv = sys.argv, [sys.argv[0]]
    try:
        from comfy.cli_args import args
    finally:
        sys.argv = argv
    args.cpu = cpu  # must be set before comfy.model_management is imported
    args.disable_auto_launch = True
    import folder_paths

    for sub in ("input", "output", "temp", "user", "models/loras", "models/checkpoints"):
        (base_dir / sub).mkdir(parents=True, exist_ok=True)
    folder_paths.set_input_directory(str(base_dir / "input"))
    folder_paths.set_output_directory(str(base_dir / "output"))
    folder_paths.set_temp_directory(str(base_dir / "temp"))
    folder_paths.set_user_directory(str(base_dir / "user"))
    folder_paths.add_model_folder_path("loras", str(base_dir / "models" / "loras"), is_default=True)
    folder_paths.add_model_folder_path("checkpoints", str(base_dir / "models" / "checkpoints"), is_default=True)

    importlib.import_module("utils.install_util")  # ComfyUI's own `utils` package, before `nodes`
    import nodes

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    if not asyncio.run(nodes.load_custom_node(str(PACK_DIR))):
        raise RuntimeError(f"ComfyUI could not load the Imagic pack from {PACK_DIR} (see the log above)")
    _BOOTED["pack"] = pack_module_name()
    return _BOOTED["pack"]

