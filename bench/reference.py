"""The reference: Imagic's two training steps as the diffusers community Imagic pipeline runs them, written
fresh for this benchmark. diffusers ``UNet2DConditionModel`` in fp32, ``DDPMScheduler.add_noise`` with
integer timesteps, the eps-MSE, batch 1, a plain ``torch.optim.Adam``, the loss read back every step (the
pipeline logs it). Step A: the UNet frozen, Adam on the text embedding. Step B: Adam on every UNet weight.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .measure import PeakMemory, StepClock

# Stable Diffusion 1.5's scheduler/scheduler_config.json (the training noise schedule).
SD15_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def _step(unet, scheduler, latents, embedding, generator, optimizer) -> float:
    noise = torch.randn(latents.shape, generator=generator).to(latents.device)
    timesteps = torch.randint(scheduler.config.num_train_timesteps, (1,), generator=generator).to(latents.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    noise_pred = unet(noisy, timesteps, embedding).sample
    loss = F.mse_loss(noise_pred.float(), noise.float(), reduction="none").mean([1, 2, 3]).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.detach().item()


def run(stage: str, unet, latents: torch.Tensor, embedding: torch.Tensor, steps: int, learning_rate: float,
        seed: int = 0) -> tuple[StepClock, PeakMemory, list[float]]:
    """``stage`` 'embed' (step A) or 'finetune' (step B); returns the step clock, the peak memory, the losses."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(**SD15_SCHEDULER)
    device = latents.device
    generator = torch.Generator().manual_seed(seed)
    if stage == "embed":
        unet.requires_grad_(False)
        unet.eval()
        embedding = torch.nn.Parameter(embedding.clone(), requires_grad=True)
        optimizer = torch.optim.Adam([embedding], lr=learning_rate)
    else:
        unet.requires_grad_(True)
        unet.train()
        optimizer = torch.optim.Adam(unet.parameters(), lr=learning_rate)
    losses = []
    with PeakMemory(device) as peak:
        clock = StepClock()
        for _ in range(steps):
            losses.append(_step(unet, scheduler, latents, embedding, generator, optimizer))
            clock.tick()
    return clock, peak, losses
