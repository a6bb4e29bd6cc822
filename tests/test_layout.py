"""The layout (docs/architecture.md) holds: core imports nothing of ComfyUI or of the pack above it, the demo wing
only public names, nodes/ reaches the demo wing only to list its nodes, and only cli/comfy_host.py (and this
suite's conftest) touch the import path. Host-free: read from the source, not imported."""
from __future__ import annotations

import ast
import subprocess
import sys

from pack import ROOT

HOST_MODULES = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "nodes", "server", "execution", "node_helpers"}


def imports(folder: str):
    """(file, level, module, names) of every import in ``folder``'s .py files (level: 0 absolute, 1 '.', 2 '..')."""
    for path in sorted((ROOT / folder).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom):
                yield path.name, node.level, node.module or "", [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    yield path.name, 0, alias.name, []


def test_core_imports_neither_comfyui_nor_the_rest_of_the_pack():
    found = [(f, level, module) for f, level, module, _ in imports("core")
             if level > 1 or (level == 0 and module.split(".")[0] in HOST_MODULES)]
    assert not found, found


def test_the_demo_wing_uses_public_names_and_nodes_reach_it_only_to_list_its_nodes():
    private = [(f, module, n) for f, level, module, names in imports("demo") if level == 2
               for n in names if n.startswith("_")]
    assert not private, private
    reaching = sorted({f for f, level, module, _ in imports("nodes") if level == 2 and module.startswith("demo")})
    assert reaching == ["extension.py"], reaching
    assert not [f for f, level, module, _ in imports("core") if module.startswith("demo")]


def test_scripts_reach_the_pack_one_way():
    """Only cli/comfy_host.py (and the tests' conftest) touch the import path; a benchmark run as a file says how
    to run it (python cli/bench.py NAME), and the launcher knows every benchmark in bench/."""
    needle = "sys." + "path"  # not written whole here, so this file does not count itself
    touching = sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
                      if "mutants" not in p.parts and needle in p.read_text("utf-8"))
    assert touching == ["cli/comfy_host.py", "tests/conftest.py"], touching
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "edit_quality.py")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1 and "python cli/bench.py edit_quality" in proc.stderr, proc.stderr
    proc = subprocess.run([sys.executable, str(ROOT / "cli" / "bench.py"), "nope"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "edit_quality" in proc.stderr and "imagic_bench" in proc.stderr, proc.stderr
