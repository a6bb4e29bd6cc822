"""Shared by the two training nodes: run ``core.training.adam_loop`` on a private model copy with
ComfyUI's progress/Cancel, turn failures into errors that name the node and the fix, free memory after."""
from __future__ import annotations

import contextlib

import torch

import comfy.model_management

from ..core.diffusion import NoiseDraws, mean_loss
from ..core.training import NonFiniteLoss, adam_loop
from .comfy_model import ComfyDenoiser, clean_latent, private_model
from .errors import fail
from .progress import TrainingProgress


@contextlib.contextmanager
def training_mode():
    """Autograd on, inference mode off (the executor runs nodes under ``torch.inference_mode()``)."""
    with torch.inference_mode(False), torch.enable_grad():
        try:
            yield
        finally:
            comfy.model_management.soft_empty_cache()


class TrainingSetup:
    """The private model copy, its denoiser and the clean latent for one training node run."""

    def __init__(self, model, latent: dict):
        self.device = model.load_device
        self.base = private_model(model)
        self.denoiser = ComfyDenoiser(self.base)
        self.x0 = clean_latent(self.base, latent, self.device)

    def run(self, node_id: str, title: str, params, entries: list[dict], steps: int, learning_rate: float,
            seed: int) -> list[float]:
        draws = NoiseDraws(self.denoiser, self.x0, seed)

        def loss_fn(step: int) -> torch.Tensor:
            noise, sigma = draws.draw()
            try:
                return mean_loss(self.denoiser, self.x0, entries, noise, sigma)
            except RuntimeError as e:
                if step == 0:  # shape/dtype mismatches show on the first forward
                    raise fail(node_id, f"the model cannot run on these inputs ({e})",
                               "use the conditioning and latent of the same checkpoint as the model") from e
                raise

        progress = TrainingProgress(title, steps)
        try:
            return adam_loop(params, loss_fn, steps, learning_rate, progress)
        except NonFiniteLoss as e:
            raise fail(node_id, f"training diverged: the {e}",
                       "lower learning_rate, or load the model in fp32/bf16 (fp16 overflows)") from e
        finally:
            progress.close()
