"""Make any API-format prompt run in seconds on a CPU: ImagicTinyCheckpoint instead of every checkpoint
loader, small images, few steps. Used by ``--demo`` and by the tests that run the shipped workflows."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

TINY = "ImagicTinyCheckpoint"
LOADERS = ("CheckpointLoaderSimple",)  # outputs MODEL, CLIP, VAE: a demo model node's outputs, slot for slot


def use_tiny_model(prompt: dict, family: str = "sd15", seed: int = 0) -> dict:
    """A copy of ``prompt`` with every checkpoint loader replaced by the tiny model of ``family``."""
    out = {}
    for node_id, node in prompt.items():
        if node["class_type"] in LOADERS:
            node = {"class_type": TINY, "inputs": {"family": family, "seed": seed},
                    "_meta": {"title": f"Imagic Tiny Checkpoint ({family})"}}
        out[node_id] = {**node, "inputs": dict(node["inputs"])}
    return out


def shrink(prompt: dict, *, size: int = 64, train_steps: int = 20, sample_steps: int = 4) -> dict:
    """A copy of ``prompt`` with small images and few training/sampling steps (other inputs unchanged)."""
    updates = {
        "ImageScale": {"width": size, "height": size},
        "EmptyLatentImage": {"width": size, "height": size},
        "ImagicOptimizeEmbedding": {"steps": train_steps},
        "ImagicFinetuneUNet": {"steps": train_steps},
        "KSampler": {"steps": sample_steps},
    }
    out = {}
    for node_id, node in prompt.items():
        inputs = dict(node["inputs"])
        for name, value in updates.get(node["class_type"], {}).items():
            if not isinstance(inputs.get(name), list):  # a linked input stays linked
                inputs[name] = value
        out[node_id] = {**node, "inputs": inputs}
    return out


def write_demo_image(path: Path, size: int = 64) -> Path:
    """A small synthetic photo (gradients and a disc), so the latent is not constant."""
    y, x = np.mgrid[0:size, 0:size] / size
    disc = ((x - 0.6) ** 2 + (y - 0.4) ** 2 < 0.06).astype(float)
    rgb = np.stack([x, y * (1 - disc) + disc, 0.5 + 0.5 * np.sin(6 * x * y)], axis=-1)
    Image.fromarray((rgb * 255).astype(np.uint8)).save(path)
    return path
