"""``--demo``: the Imagic edit workflow on the built-in shapes model, one held-out picture, its measured recipe.

The demo runs the same workflow as a real edit (workflows/imagic_edit.json) with the checkpoint loader
replaced by Imagic Shapes Checkpoint -- the small model trained on the shapes world (demo/shapes_world.py),
whose outputs are real pictures -- and the settings measured on that model. The input is a render of a
caption held out of the model's training; the target text changes one word of it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..core import defaults
from .tiny_prompt import LOADERS

SHAPES = "ImagicShapesCheckpoint"
SOURCE = ("red", "circle", "left")  # held out of training (demo.shapes_world.HELD_OUT)
SCENE_SEED = 100  # its background shade, size and jitter
DEMO_TEXT = "a blue circle on the left"
# a weaker edit, the default, a stronger one (the ends of Imagic Auto Eta's range)
DEMO_ETAS = [defaults.AUTO_ETA["eta_min"], defaults.ETA, defaults.AUTO_ETA["eta_max"]]
# The node defaults (core/defaults.py; bench/RESULTS.md, Edit quality: measured on this model) at 128 px, sampled as
# the model's text-to-image (demo/shapes_checkpoint.py: SAMPLING).
SETTINGS = {"size": 128, "embed_steps": defaults.EMBED_STEPS, "tune_steps": defaults.TUNE_STEPS}
# low_memory off: for a model this small it only costs time (bench/edit_quality.py measured 3.5x faster steps)
TRAINING = {"ImagicOptimizeEmbedding": {"learning_rate": defaults.EMBED_LEARNING_RATE, "low_memory": False},
            "ImagicFinetuneUNet": {"learning_rate": defaults.LEARNING_RATE[defaults.TUNE_METHOD],
                                   "method": defaults.TUNE_METHOD, "lora_rank": defaults.LORA_RANK,
                                   "low_memory": False}}


def use_shapes_model(prompt: dict) -> dict:
    """A copy of ``prompt`` on the shapes model: its loader, learning rates and sampler settings."""
    from .shapes_checkpoint import SAMPLING

    sampler = dict(SAMPLING)  # steps too, unless the run gives its own (--sample-steps)
    out = {}
    for node_id, node in prompt.items():
        inputs = dict(node["inputs"])
        if node["class_type"] in LOADERS:
            node = {"class_type": SHAPES, "_meta": {"title": "Imagic Shapes Checkpoint (demo)"}}
            inputs = {}
        elif node["class_type"] in TRAINING:
            inputs.update(TRAINING[node["class_type"]])
        elif node["class_type"] == "KSampler":
            inputs.update(sampler)
        out[node_id] = {**node, "inputs": inputs}
    return out


def write_demo_scene(path: Path) -> Path:
    """The demo's input: a shapes-world render of a held-out caption."""
    from . import shapes_world as world

    pixels = world.render(world.scene_for_seed(*SOURCE, SCENE_SEED))
    Image.fromarray((pixels * 255).round().astype(np.uint8)).save(path)
    return path


def edit_of(files: list[Path], prefix: str) -> Path | None:
    """The edit itself among the files one run wrote under ``prefix`` (not the input | edit picture)."""
    return next((f for f in files if f.name.startswith(f"{prefix}_0") and f.suffix == ".png"), None)


def write_side_by_side(input_picture: Path, edits: list[tuple[float, Path]], path: Path) -> Path:
    """input | eta ... as one labelled picture."""
    from ..core.grid import labelled_row

    with Image.open(input_picture) as first:
        images = [first.convert("RGB")] + [Image.open(p).convert("RGB") for _, p in edits]
    labelled_row(images, ["input"] + [f"eta {eta:g}" for eta, _ in edits]).save(path)
    return path
