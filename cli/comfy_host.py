"""The one place that finds ComfyUI, boots it in this process, picks the test stand-ins and hands out the
pack's modules. The headless command (cli/headless.py), the tests (tests/conftest.py, tests/pack.py), the
benchmarks (bench/) and CI (.ci/run) all go through it.

* ``find_comfyui()``: ``$COMFYUI_PATH``, then the ``custom_nodes/<pack>`` layout (two folders up from the pack),
  then ``~/comfy/ComfyUI`` (comfy-cli's default place; where ``.ci/run`` provisions the pinned host).
* ``boot(host, base_dir)``: ComfyUI's node system in this process (no server), its folders under ``base_dir``,
  the built-in nodes and this pack loaded by ComfyUI's own loader.
* ``pack_module("core.training")``: the pack's module under the name ComfyUI's loader gives the folder, so the
  tests, the benchmarks and the loaded nodes share one copy; works with or without ComfyUI (the pack's
  ``__init__`` is light).
* Stand-ins (``tests/stand_ins``): import-only torchvision and spandrel for machines where they have no build
  (the CI machine). Only the tests and benchmarks ask for them (``stand_ins=True``); the headless command and
  the pack itself never use them. They go at the *end* of ``sys.path``, so a real install always wins.

From outside the pack (a script, the tests, CI) put this folder on ``sys.path`` and ``import comfy_host``: the
module then replaces itself with the pack's own copy (``<pack>.cli.comfy_host``), so a process has one boot
state whichever way it came in.
"""
from __future__ import annotations

import asyncio
import importlib
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

PACK_DIR = Path(__file__).resolve().parents[1]
STAND_INS = PACK_DIR / "tests" / "stand_ins"
STANDS_IN_FOR = ("torchvision", "spandrel")
NO_HOST = ("no ComfyUI host found (set COMFYUI_PATH, install this pack in ComfyUI/custom_nodes, or put ComfyUI "
           "v0.3.64 at ~/comfy/ComfyUI: bash .ci/run provisions it)")


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


def pack_module_name() -> str:
    """The name ComfyUI's loader (``nodes.load_custom_node``) gives this folder in sys.modules."""
    return str(PACK_DIR).replace(".", "_x_")


def pack_module(name: str = "") -> ModuleType:
    """``pack_module("core.training")`` -> the pack's module, the same object the loaded nodes use;
    ``pack_module()`` -> the pack itself."""
    root = pack_module_name()
    if root not in sys.modules:
        spec = importlib.util.spec_from_file_location(root, PACK_DIR / "__init__.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[root] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"{root}.{name}") if name else sys.modules[root]


def missing_packages() -> list[str]:
    """The packages of STANDS_IN_FOR that have no real install here (the stand-ins themselves not counted)."""
    paths = [p for p in sys.path if Path(p or ".").resolve() != STAND_INS]
    return [name for name in STANDS_IN_FOR if importlib.machinery.PathFinder.find_spec(name, paths) is None]


def stand_in_paths() -> list[str]:
    """``[STAND_INS]`` where a package it stands in for is missing, else ``[]``."""
    return [str(STAND_INS)] if missing_packages() else []


def child_env(env: dict | None = None, *, stand_ins: bool = True) -> dict:
    """``env`` (default: this process's) for a child Python that boots ComfyUI: the stand-ins on its
    PYTHONPATH where needed. (A child's PYTHONPATH comes before its site-packages: where only one of the two
    packages is missing, the child sees the stand-in of the other too; the tests use neither.)"""
    env = dict(os.environ if env is None else env)
    paths = [*(stand_in_paths() if stand_ins else []), env.get("PYTHONPATH")]
    if any(paths):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    return env


def boot(host: Path, base_dir: Path, *, cpu: bool = True, stand_ins: bool = False) -> str:
    """Import ComfyUI from ``host``, point its folders at ``base_dir`` and load the built-in and Imagic nodes.

    Returns the sys.modules name of this pack as ComfyUI loaded it. Idempotent within one process.
    """
    name = pack_module_name()
    if name in _BOOTED:
        return name
    host = Path(host).resolve()
    if str(host) not in sys.path:
        sys.path.insert(0, str(host))
    for path in stand_in_paths() if stand_ins else []:
        if path not in sys.path:
            sys.path.append(path)  # last: a real torchvision/spandrel always wins
    # ComfyUI parses its own command line at import; keep ours out of it.
    argv, sys.argv = sys.argv, [sys.argv[0]]
    try:
        from comfy.cli_args import args
    finally:
        sys.argv = argv
    args.cpu = cpu  # must be set before comfy.model_management is imported
    args.disable_auto_launch = True
    import folder_paths

    base_dir = Path(base_dir)
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
    _BOOTED.add(name)
    return name


_BOOTED: set[str] = set()

if __name__ != f"{pack_module_name()}.cli.comfy_host":
    # Imported from outside the pack (``import comfy_host`` with cli/ on sys.path): become the pack's copy.
    sys.modules[__name__] = pack_module("cli.comfy_host")
