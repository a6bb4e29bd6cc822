"""The pack's modules for the tests, imported the one way the project has (cli/comfy_host.py: the name
ComfyUI's loader gives the folder, so the tests and the loaded nodes share one copy; no ComfyUI needed)."""
from __future__ import annotations

from pathlib import Path

import comfy_host  # tests/conftest.py imported it: the pack's own copy, <pack>.cli.comfy_host

ROOT = Path(__file__).resolve().parents[1]

NAME = comfy_host.pack_module_name()
pack = comfy_host.pack_module
sub = comfy_host.pack_module  # sub("core.training") -> the pack's module
