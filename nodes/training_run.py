"""Shared by the two training nodes: run ``core.training.adam_loop`` on a private model copy with
ComfyUI's progress/Cancel, turn failures into errors that name the node and the fix, free memory after."""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

import comfy.model_management

from ..core import defaults
from ..core.checkpointing import checkpoint_blocks
from ..core.diffusion import NoiseDraws, mean_loss
from ..core.precision import Precision
from ..core.threads import cpu_threads
from ..core.training import EarlyStop, NonFiniteLoss, adam_loop
from .comfy_model import ComfyDenoiser, clean_latent, private_model, release_device_memory
from .conditioning_io import model_entries
from .errors import fail
from .progress import TrainingProgress

LOG = logging.getLogger("comfyui-imagic")
LOW_MEMORY_DEFAULT = True
STEPS_TOOLTIP = ("{what} steps (paper: {paper}). {steps} at the default learning rate: on the shapes benchmark at "
                 "least as good as the paper's steps, in a tenth of their time (bench/RESULTS.md); full-size models "
                 "may differ: more steps (or a lower rate) if the edit loses the photo's look.")
LOW_MEMORY_TOOLTIP = (
    "Use less memory: gradient checkpointing; on a CUDA GPU with bf16 units also bf16 mixed precision (fp32 "
    "master copies of what trains, frozen weights kept in bf16) and ComfyUI's other models unloaded from the GPU "
    "while training. CPUs train in fp32 either way (the same result on every CPU). Off: fp32, no recomputation.")

EARLY_STOP_TOOLTIP = (
    f"Stop when converged: every {defaults.EARLY_STOP_EVERY} steps the loss on {defaults.EARLY_STOP_DRAWS} fixed "
    f"held-out noise draws is measured; training stops when it has not improved by "
    f"{defaults.EARLY_STOP_MARGIN:.0%} over the last {defaults.EARLY_STOP_PATIENCE} checks (steps stays the upper "
    "bound). The chart shows where it stopped; Imagic Save Finetune records it. On the shapes benchmark: 0.41x the "
    "time per edit, but the edits kept fewer details (bench/RESULTS.md). Off: always train all steps.")

BATCH_SIZE_TOOLTIP = (
    "Noise/timestep draws per step, trained as one batch. More lowers the steps needed for the same loss "
    "(bench/RESULTS.md), but each step costs more (on a CPU about batch_size times): 1 is the paper's setting.")


@dataclass(frozen=True)
class TrainingSettings:
    """How a training node trains: its widgets other than the model, conditioning, latent and method."""

    steps: int
    learning_rate: float
    seed: int = 0
    low_memory: bool = LOW_MEMORY_DEFAULT
    batch_size: int = 1
    early_stop: bool = defaults.EARLY_STOP
    schedule: str = defaults.EMBED_SCHEDULE  # how the rate moves over the steps (core.training.rate_at)


class TrainedList(list):
    """e_opt (a CONDITIONING) that carries how many steps trained it, for Imagic Save Finetune's metadata."""

    steps_trained: int


class TrainedDict(dict):
    """A LORA_MODEL that carries how many steps trained it and which blocks (``lora_blocks``), for Imagic Save
    Finetune's metadata."""

    steps_trained: int
    lora_blocks: str


def with_steps_trained(value: list | dict, losses: list[float], *,
                       lora_blocks: str | None = None) -> TrainedList | TrainedDict:
    """``value`` marked with the number of steps that trained it (one loss per step; fewer than ``steps`` when
    early stopping ended the training) and, for a fine-tune, the blocks it covers: downstream nodes get the same
    object from ComfyUI's cache."""
    out = TrainedList(value) if isinstance(value, list) else TrainedDict(value)
    out.steps_trained = len(losses)
    if lora_blocks is not None:
        out.lora_blocks = lora_blocks
    return out


def steps_trained(value) -> int | None:
    """How many steps trained a training node's output, or None for a value from elsewhere."""
    return getattr(value, "steps_trained", None)


def trained_blocks(value) -> str | None:
    """The ``lora_blocks`` a fine-tune (Imagic Finetune UNet's ``lora`` output) covers, or None for a value from
    elsewhere."""
    return getattr(value, "lora_blocks", None)


def stopped_at(losses: list[float], settings: TrainingSettings) -> int | None:
    """The step count after which early stopping ended the training (None: all ``steps`` ran)."""
    return len(losses) if len(losses) < settings.steps else None


@contextlib.contextmanager
def training_mode():
    """Autograd on, inference mode off (the executor runs nodes under ``torch.inference_mode()``)."""
    with torch.inference_mode(False), torch.enable_grad():
        try:
            yield
        finally:
            comfy.model_management.soft_empty_cache()


class TrainingSetup:
    """The private model copy, its denoiser and the clean latent for one training node run.

    A context manager: on exit it drops the copy (so ``training_mode`` frees its memory). With
    ``low_memory``: mixed precision (``core.precision``), checkpointed blocks, and the accelerator emptied
    of ComfyUI's cached models when training starts (after the trainer has read the given model).
    """

    def __init__(self, model, latent: dict, settings: TrainingSettings, *, train_weights: bool):
        self.device = model.load_device
        self.settings = settings
        self.precision = Precision.for_device(self.device, mixed=settings.low_memory)
        self.base = private_model(model, train_weights, self.precision)
        if settings.low_memory:
            checkpoint_blocks(self.base.diffusion_model)
        self.denoiser = ComfyDenoiser(self.base)
        self.x0 = clean_latent(self.base, latent, self.device)
        self.early_stop: EarlyStop | None = None  # after run(): the checks, and where it stopped

    def __enter__(self) -> TrainingSetup:
        return self

    def __exit__(self, *exc) -> None:
        self.base = self.denoiser = self.x0 = None

    def run(self, node_id: str, title: str, params, entries: list[dict]) -> list[float]:
        """Train ``params`` (the embedding in ``entries``, or the copy's adapters/weights) as the settings say."""
        settings = self.settings
        draws = NoiseDraws(self.denoiser, self.x0, settings.seed, batch=settings.batch_size)

        def loss_fn(step: int) -> torch.Tensor:
            noise, sigma = draws.draw()
            try:
                with self.precision.autocast(self.device):
                    return mean_loss(self.denoiser, self.x0, entries, noise, sigma)
            except RuntimeError as e:
                if step == 0:  # shape/dtype mismatches show on the first forward
                    raise fail(node_id, f"the model cannot run on these inputs ({e})",
                               "use the conditioning and latent of the same checkpoint as the model") from e
                raise

        if settings.early_stop:
            held_noise, held_sigma = NoiseDraws(self.denoiser, self.x0, defaults.HELDOUT_SEED,
                                                batch=defaults.EARLY_STOP_DRAWS).draw()

            def heldout() -> torch.Tensor:  # EarlyStop calls it under torch.no_grad
                with self.precision.autocast(self.device):
                    return mean_loss(self.denoiser, self.x0, entries, held_noise, held_sigma)

            self.early_stop = EarlyStop(heldout, defaults.EARLY_STOP_EVERY, defaults.EARLY_STOP_PATIENCE,
                                        defaults.EARLY_STOP_MARGIN, defaults.EARLY_STOP_MIN_CHECKS)
        if settings.low_memory:
            release_device_memory(self.device)
        progress = TrainingProgress(title, settings.steps)
        try:
            with cpu_threads(self.device):  # on a CPU: a thread count the other work on it leaves room for
                losses = adam_loop(params, loss_fn, settings.steps, settings.learning_rate, progress, self.early_stop,
                                   settings.schedule)
            progress.finish(len(losses))
            if self.early_stop is not None and self.early_stop.stopped_at is not None:
                LOG.info("%s: converged, stopped early after step %d of %d (held-out loss %s)", title,
                         len(losses), settings.steps, ", ".join(f"{v:.5g}@{k}" for k, v in self.early_stop.checks))
            return losses
        except NonFiniteLoss as e:
            raise fail(node_id, f"training diverged: the {e}",
                       "lower learning_rate, or load the model in fp32/bf16 (fp16 overflows)") from e
        finally:
            progress.close()


def heldout_loss(model, conditioning: list, latent: dict, seed: int = defaults.HELDOUT_SEED, n: int = 64) -> float:
    """The Imagic reconstruction loss of ``conditioning`` on ``n`` held-out noise draws, on the frozen model
    (the nodes' own code path, fp32): how well a model + embedding reconstruct the image (tests, bench)."""
    with torch.inference_mode(False), torch.no_grad():
        denoiser = frozen_denoiser(model)
        x0 = clean_latent(denoiser.base, latent, model.load_device)
        noise, sigma = NoiseDraws(denoiser, x0, seed, batch=n).draw()
        return float(mean_loss(denoiser, x0, model_entries(conditioning, x0.device), noise, sigma))


def frozen_denoiser(model) -> ComfyDenoiser:
    """The frozen model (as the given MODEL runs, fp32, weights shared) as a Denoiser, for scoring: call it
    outside inference mode, under ``torch.no_grad()``."""
    return ComfyDenoiser(private_model(model))
