"""pytest plugin for the mutation run only (``[tool.mutmut] pytest_add_cli_args`` loads it; CI never does).

mutmut names a mutant after its file (``core/auto_eta.py`` -> ``core.auto_eta``) and switches it on only in a
function whose ``__module__`` has that name. The tests reach ``core`` through the pack (tests/pack.py), which
ComfyUI's loader names after the folder: ``<folder>.core.auto_eta``, so no mutant would ever run. Here ``core``
is loaded once more from the mutants/ copy under its own name, from its file (the import path unchanged), and the
pack's names point at those same modules before any test imports them.

It also leaves out the tests that boot the ComfyUI host (the ``comfy`` and server fixtures): they take minutes,
and the campaign is over the torch-only maths.
"""
from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the mutants/ copy of the repository
HOST_FIXTURES = {"comfy", "workflow_server", "frontend"}


def _alias_core() -> None:
    spec = importlib.util.spec_from_file_location("comfy_host", ROOT / "cli" / "comfy_host.py")
    comfy_host = importlib.util.module_from_spec(spec)
    sys.modules["comfy_host"] = comfy_host
    spec.loader.exec_module(comfy_host)  # replaces itself with the pack's copy, as tests/conftest.py gets it
    comfy_host = sys.modules["comfy_host"]
    root = comfy_host.pack_module_name()
    if "core" not in sys.modules:
        spec = importlib.util.spec_from_file_location("core", ROOT / "core" / "__init__.py",
                                                      submodule_search_locations=[str(ROOT / "core")])
        core = importlib.util.module_from_spec(spec)
        sys.modules["core"] = core
        spec.loader.exec_module(core)
    core = sys.modules["core"]
    sys.modules[f"{root}.core"] = core
    for info in pkgutil.iter_modules(core.__path__):
        sys.modules[f"{root}.core.{info.name}"] = importlib.import_module(f"core.{info.name}")


_alias_core()


def pytest_collection_modifyitems(config, items):
    host = [item for item in items if HOST_FIXTURES & set(getattr(item, "fixturenames", ()))]
    if host:
        config.hook.pytest_deselected(items=host)
        items[:] = [item for item in items if item not in host]
