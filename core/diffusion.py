"""The denoising loss of Imagic, written against a small model-agnostic interface.

The paper trains with the eps-prediction MSE of Stable Diffusion. To be right for every parameterisation
(eps, v-prediction, flow/velocity, x0) the loss here is the MSE in the model's *own* output space,
obtained from the model's x0 prediction and one number per sigma: the derivative of the x0 prediction
with respect to the raw network output. For an eps model that derivative is ``-sigma`` and the loss is
exactly ``||eps_hat - eps||^2``; for v-prediction it is the v-MSE; for flow models the velocity MSE.
Nothing here knows a schedule, a latent scale factor or a model family: the ``Denoiser`` supplies them.
"""
from __future__ import annotations

from typing import Any, Protocol

import torch


class Denoiser(Protocol):
    """What the Imagic loops need from a diffusion model (ComfyUI's adapter lives in ``nodes/``)."""

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The noisy sample the model sees at noise level ``sigma`` (one per batch item)."""

    def predict_x0(self, x_t: torch.Tensor, sigma: torch.Tensor, cond: Any) -> torch.Tensor:
        """The model's estimate of the clean sample, through its own parameterisation."""

    def output_scale(self, sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """d(predict_x0)/d(raw network output) at ``sigma``, broadcastable to ``like``."""

    def sample_sigmas(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` training noise levels drawn from the model's timestep distribution (on the CPU)."""


def native_mse(x0_hat: torch.Tensor, x0: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """MSE in the network's output space: (x0_hat - x0) divided by d x0_hat / d output."""
    return (((x0_hat.float() - x0.float()) / scale.float()) ** 2).mean()


class NoiseDraws:
    """Seeded noise and noise levels for the training loops: same seed, same draws, on any device."""

    def __init__(self, denoiser: Denoiser, x0: torch.Tensor, seed: int, batch: int = 1):
        self.denoiser = denoiser
        self.x0 = x0
        self.batch = batch
        self.generator = torch.Generator(device="cpu").manual_seed(int(seed))

    def draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (self.batch,) + tuple(self.x0.shape[1:])
        noise = torch.randn(shape, generator=self.generator, dtype=torch.float32)
        sigma = self.denoiser.sample_sigmas(self.batch, self.generator)
        return _to_device(noise, self.x0), _to_device(sigma, self.x0, torch.float32)


def _to_device(t: torch.Tensor, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Copy a CPU draw to ``like``'s device; to CUDA from pinned memory, asynchronously (no host wait)."""
    if like.device.type == "cuda":
        t = t.pin_memory()
    return t.to(like.device, dtype or like.dtype, non_blocking=True)


def denoising_loss(denoiser: Denoiser, x0: torch.Tensor, cond: Any, noise: torch.Tensor,
                   sigma: torch.Tensor) -> torch.Tensor:
    """The Imagic reconstruction loss for one draw of noise and noise level (batch = len(sigma))."""
    x0 = x0.expand((sigma.shape[0],) + tuple(x0.shape[1:]))
    x_t = denoiser.add_noise(x0, noise, sigma)
    x0_hat = denoiser.predict_x0(x_t, sigma, cond)
    return native_mse(x0_hat, x0, denoiser.output_scale(sigma, x0_hat))


def mean_loss(denoiser: Denoiser, x0: torch.Tensor, conds: list, noise: torch.Tensor,
              sigma: torch.Tensor) -> torch.Tensor:
    """Average of ``denoising_loss`` over several conditioning entries, with the same noise draw."""
    return sum(denoising_loss(denoiser, x0, c, noise, sigma) for c in conds) / len(conds)
