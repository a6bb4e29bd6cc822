"""Our side: the Imagic nodes' own ``execute`` on a ComfyUI model, as ComfyUI's executor calls them (under
``torch.inference_mode()``), each step timed through ComfyUI's progress hook."""
from __future__ import annotations

import torch

import comfy.utils

from ..core import defaults
from .measure import PeakMemory, StepClock


def conditioning(embedding: torch.Tensor) -> list:
    """A CONDITIONING as CLIP Text Encode gives it for SD1.5 (tokens + CLIP-L pooled output)."""
    return [[embedding.cpu(), {"pooled_output": embedding[:, -1].cpu().clone()}]]


def vae_latent(model, latents: torch.Tensor) -> dict:
    """A model-space latent as VAE Encode gives it (the model's own latent_format undoes its scaling)."""
    return {"samples": model.model.latent_format.process_out(latents).cpu()}


def _timed(call, device: torch.device):
    clock = StepClock()  # the first step's time includes the node's set-up (the private copy)
    comfy.utils.set_progress_bar_global_hook(clock.tick)
    try:
        with PeakMemory(device) as peak, torch.inference_mode():
            out = call()
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    return clock, peak, out


def run(pack, stage: str, model, latents: torch.Tensor, embedding: torch.Tensor, steps: int, learning_rate: float,
        low_memory: bool, seed: int = 0, lora_blocks: str = defaults.LORA_BLOCKS):
    """``stage``: 'embed' (Imagic Optimize Embedding), 'full' or 'lora' (Imagic Finetune UNet, on ``lora_blocks``).

    ``latents`` are in the model's space (as the reference uses them); the node gets them as a VAE Encode
    output. Returns the step clock (the first tick is the end of step 1: setup time counts in it), the peak
    memory and the losses.
    """
    latent = vae_latent(model, latents)
    cond = conditioning(embedding)

    def call():
        if stage == "embed":
            node = pack("nodes.optimize_embedding").ImagicOptimizeEmbedding
            return node.execute(model, cond, latent, steps, learning_rate, seed, low_memory=low_memory)
        node = pack("nodes.finetune_unet").ImagicFinetuneUNet
        return node.execute(model, cond, latent, steps, learning_rate, stage, defaults.LORA_RANK, seed,
                            low_memory=low_memory, lora_blocks=lora_blocks)

    clock, peak, out = _timed(call, latents.device)
    return clock, peak, out.result[-1]["loss"]


def edit(pack, model, latents: torch.Tensor, embedding: torch.Tensor, low_memory: bool,
         embed_steps: int = defaults.PAPER["embed_steps"], tune_steps: int = defaults.PAPER["tune_steps"],
         sample_steps: int = 20, eta: float = 0.7, seed: int = 0):
    """One whole edit with the paper's steps (A: 1000 steps, B: LoRA 1500 steps, eta 0.7) and KSampler's
    (20 Euler steps, cfg 8): returns (seconds, peak memory, edited latent)."""
    import time

    import comfy.sample

    optimize = pack("nodes.optimize_embedding").ImagicOptimizeEmbedding
    finetune = pack("nodes.finetune_unet").ImagicFinetuneUNet
    interpolate = pack("nodes.interpolate_conditioning").ImagicInterpolateConditioning
    latent = vae_latent(model, latents)
    target = conditioning(embedding)
    with PeakMemory(latents.device) as peak, torch.inference_mode():
        start = time.perf_counter()
        e_opt = optimize.execute(model, target, latent, embed_steps, defaults.EMBED_LEARNING_RATE, seed,
                                 low_memory=low_memory).result[0]
        tuned = finetune.execute(model, e_opt, latent, tune_steps, defaults.METHOD_DEFAULT, defaults.TUNE_METHOD,
                                 defaults.LORA_RANK, seed,
                                 low_memory=low_memory).result[0]
        positive = interpolate.execute(e_opt, target, eta).result[0]
        noise = comfy.sample.prepare_noise(latent["samples"], seed)
        out = comfy.sample.sample(tuned, noise, sample_steps, 8.0, "euler", "normal", positive, target,
                                  latent["samples"])
        seconds = time.perf_counter() - start
    return seconds, peak, out
