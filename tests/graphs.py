"""API-format prompts for the Imagic graph, as the frontend would queue them (shared by the host tests)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

TARGET_TEXT = "a photo of a sitting dog"


def write_input_image(input_dir: Path, name: str = "imagic_input.png", size: int = 64) -> str:
    """A structured test photo (gradients and a disc), so the latent is not constant."""
    y, x = np.mgrid[0:size, 0:size] / size
    disc = ((x - 0.6) ** 2 + (y - 0.4) ** 2 < 0.06).astype(float)
    rgb = np.stack([x, y * (1 - disc) + disc, 0.5 + 0.5 * np.sin(6 * x * y)], axis=-1)
    Image.fromarray((rgb * 255).astype(np.uint8)).save(input_dir / name)
    return name


def imagic_graph(image: str, *, family: str = "sd15", text: str = TARGET_TEXT, embed_steps: int = 40,
                 embed_lr: float = 2e-2, tune_steps: int = 60, tune_lr: float = 1e-3, method: str = "lora",
                 rank: int = 8, eta: float = 0.7, sample_steps: int = 8, cfg: float = 1.0, seed: int = 0,
                 model_seed: int = 0, early_stop: bool = False, schedule: str | None = None) -> dict:
    """Loader -> CLIP Text Encode + VAE Encode -> the three Imagic nodes -> KSampler -> VAE Decode -> Save.
    Early stopping off unless asked: the tests' training runs exactly the steps they give. ``schedule``: Imagic
    Finetune UNet's learning_rate_schedule (None: the input left out, as in graphs saved before it: the default)."""
    graph = {
        "1": {"class_type": "ImagicTinyCheckpoint", "inputs": {"family": family, "seed": model_seed}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": text}},
        "3": {"class_type": "LoadImage", "inputs": {"image": image}},
        "4": {"class_type": "VAEEncode", "inputs": {"pixels": ["3", 0], "vae": ["1", 2]}},
        "5": {"class_type": "ImagicOptimizeEmbedding",
              "inputs": {"model": ["1", 0], "conditioning": ["2", 0], "latent": ["4", 0], "steps": embed_steps,
                         "learning_rate": embed_lr, "seed": seed, "early_stop": early_stop}},
        "6": {"class_type": "ImagicFinetuneUNet",
              "inputs": {"model": ["1", 0], "conditioning": ["5", 0], "latent": ["4", 0], "steps": tune_steps,
                         "learning_rate": tune_lr, "method": method, "lora_rank": rank, "seed": seed,
                         "early_stop": early_stop}},
        "7": {"class_type": "ImagicInterpolateConditioning",
              "inputs": {"optimized": ["5", 0], "target": ["2", 0], "eta": eta}},
        "8": {"class_type": "KSampler",
              "inputs": {"model": ["6", 0], "positive": ["7", 0], "negative": ["2", 0], "latent_image": ["4", 0],
                         "seed": seed, "steps": sample_steps, "cfg": cfg, "sampler_name": "euler",
                         "scheduler": "normal", "denoise": 1.0}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["1", 2]}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "imagic_test"}},
    }
    if schedule is not None:
        graph["6"]["inputs"]["learning_rate_schedule"] = schedule
    return graph


def sampler_only(graph: dict, model: list, positive: list, node: str = "8", seed: int = 0) -> dict:
    """A copy of ``graph`` whose KSampler uses another model/positive input (e.g. the un-tuned model)."""
    out = {k: {"class_type": v["class_type"], "inputs": dict(v["inputs"])} for k, v in graph.items()}
    out[node]["inputs"].update(model=model, positive=positive, seed=seed)
    return out
