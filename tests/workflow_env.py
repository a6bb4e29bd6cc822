"""The shipped workflows in tests: where they are, the files they name, and a real server set up for them.

The server gets an empty stand-in file for every model the workflows name (so ComfyUI's validation accepts
the names, as on a machine that has them) and the input picture they name. (Where spandrel is missing, the
server also needs its import-only stand-in so the frontend can build model combos: tests/stand_ins, which
tests/live_server.py passes on through cli/comfy_host.py.)
"""
from __future__ import annotations

import json
from pathlib import Path

from graphs import write_input_image
from pack import ROOT, sub

WORKFLOWS = ROOT / "workflows"
NAMES = ("imagic_demo_shapes", "imagic_edit", "imagic_reuse_finetune", "imagic_eta_grid",
         "baseline_sdedit", "baseline_instructpix2pix", "imagic_edit_sdxl", "imagic_edit_sd3", "imagic_edit_flux",
         "imagic_edit_masked")
MODEL_WIDGETS = {"CheckpointLoaderSimple": "checkpoints", "ImagicLoadFinetune": "loras"}
# Loaders of separate model files (SD3's and Flux's templates): their folder and how many file-name widgets.
FILE_WIDGETS = {"UNETLoader": ("diffusion_models", 1), "VAELoader": ("vae", 1),
                "DualCLIPLoader": ("text_encoders", 2), "TripleCLIPLoader": ("text_encoders", 3)}
TEST_IMAGE = "imagic_test_photo.png"


def load(name: str) -> dict:
    return json.loads((WORKFLOWS / f"{name}.json").read_text(encoding="utf-8"))


def named_files(workflow: dict) -> dict[str, set[str]]:
    """{"checkpoints": {...}, "loras": {...}, "input": {...}}: the files the workflow's widgets name."""
    found: dict[str, set[str]] = {"checkpoints": set(), "loras": set(), "input": set()}
    for node in workflow["nodes"]:
        if node["type"] in FILE_WIDGETS:
            folder, count = FILE_WIDGETS[node["type"]]
            found.setdefault(folder, set()).update(node["widgets_values"][:count])
        elif node["type"] in MODEL_WIDGETS:
            found[MODEL_WIDGETS[node["type"]]].add(node["widgets_values"][0])
        elif node["type"] in ("LoadImage", "LoadImageMask"):
            found["input"].add(node["widgets_values"][0])
    return found


def prepare_base(base: Path) -> Path:
    """Model stand-ins and input pictures for every shipped workflow under ``base``."""
    for name in NAMES:
        files = named_files(load(name))
        for kind in set(files) - {"input"}:
            for filename in files[kind]:
                path = base / "models" / kind / filename
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
        (base / "input").mkdir(parents=True, exist_ok=True)
        for filename in files["input"]:
            write_input_image(base / "input", filename, size=256)
    write_input_image(base / "input", TEST_IMAGE, size=64)
    return base


def api_prompt(workflow: dict, object_info: dict) -> dict:
    return sub("cli.workflow_api").to_api(workflow, object_info)


def tiny(prompt: dict, *, train_steps: int = 3, sample_steps: int = 2, size: int = 64) -> dict:
    """``prompt`` on the tiny SD1.5-family model, the test photo, small sizes and few steps."""
    tiny_prompt = sub("demo.tiny_prompt")
    out = tiny_prompt.shrink(tiny_prompt.use_tiny_model(prompt), size=size, train_steps=train_steps,
                             sample_steps=sample_steps)
    for node in out.values():
        if node["class_type"] == "LoadImage":
            node["inputs"]["image"] = TEST_IMAGE
    return out
