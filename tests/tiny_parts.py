"""The tiny SD1.5-family model with an e_opt stand-in (the encoded text) and a latent, for tests that call Imagic
Finetune UNet's core directly (tests/test_lora_blocks.py, tests/test_learning_rate_schedule.py), and one short
fine-tune of it. Needs the booted host (the tests' ``comfy`` fixture)."""
from __future__ import annotations

import types

import torch

from pack import sub


def sd15_parts() -> types.SimpleNamespace:
    """``model``, ``cond`` and ``latent``, built under inference mode as the executor would."""
    with torch.inference_mode():
        model, clip, _ = sub("demo.tiny_checkpoint").build_tiny_checkpoint("sd15", 0)
        cond = clip.encode_from_tokens_scheduled(clip.tokenize("a photo of a sitting dog"))
    latent = {"samples": torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0))}
    return types.SimpleNamespace(model=model, cond=cond, latent=latent)


def finetune(parts, method: str = "lora", steps: int = 2, settings: dict | None = None, **kwargs) -> dict:
    """The delta of ``steps`` fine-tune steps at the method's default rate, low_memory off; ``settings`` go to
    TrainingSettings, ``kwargs`` to nodes.finetune_unet.finetune."""
    tr = sub("nodes.training_run")
    chosen = tr.TrainingSettings(steps=steps, learning_rate=sub("core.defaults").LEARNING_RATE[method],
                                 low_memory=False, **(settings or {}))
    with tr.training_mode():
        return sub("nodes.finetune_unet").finetune(parts.model, parts.cond, parts.latent, chosen, method=method,
                                                   **kwargs)[0]
