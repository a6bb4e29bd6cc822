"""Imagic step A: optimise the target text embedding so the frozen model reconstructs the input image."""
from __future__ import annotations

import time

from comfy_api.latest import io

from ..core import defaults
from .comfy_model import check_inputs
from .conditioning_io import model_entries, to_conditioning, trained_tensors
from .progress import loss_ui
from .prompt_graph import check_texts_to_save
from .training_run import (
    BATCH_SIZE_TOOLTIP,
    EARLY_STOP_TOOLTIP,
    LOW_MEMORY_DEFAULT,
    LOW_MEMORY_TOOLTIP,
    STEPS_TOOLTIP,
    TrainingSettings,
    TrainingSetup,
    stopped_at,
    training_mode,
    with_steps_trained,
)

NODE_ID = "ImagicOptimizeEmbedding"
TITLE = "Imagic: optimize embedding"  # the progress bars' and the loss chart's title


class ImagicOptimizeEmbedding(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_ID,
            display_name="Imagic Optimize Embedding",
            category="Imagic",
            description=(
                "Imagic step A. Starting from the target text's embedding (e_tgt), optimises it so the frozen "
                "diffusion model reconstructs the input image; returns e_opt with the same structure as the "
                "input conditioning. The model is not changed."),
            inputs=[
                io.Model.Input("model",
                               tooltip="The diffusion model (kept frozen). Use the same checkpoint for all Imagic "
                                       "nodes."),
                io.Conditioning.Input("conditioning",
                                      tooltip="The target text encoded by this checkpoint's CLIP (e_tgt), e.g. "
                                              "'a photo of a sitting dog'."),
                io.Latent.Input("latent",
                                tooltip="The input photo, VAE-encoded with this checkpoint's VAE (one image)."),
                io.Int.Input("steps", default=defaults.EMBED_STEPS, min=1, max=100000,
                             tooltip=STEPS_TOOLTIP.format(what="Optimisation", steps=defaults.EMBED_STEPS,
                                                          paper=defaults.PAPER["embed_steps"])),
                io.Float.Input("learning_rate", default=defaults.EMBED_LEARNING_RATE, min=1e-7, max=1.0, step=1e-5,
                               tooltip=f"Adam learning rate (paper: {defaults.PAPER['embed_learning_rate']:g})."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the training noise and timesteps; same seed and inputs give the same "
                                     "result."),
                io.Boolean.Input("low_memory", default=LOW_MEMORY_DEFAULT, optional=True, tooltip=LOW_MEMORY_TOOLTIP),
                io.Int.Input("batch_size", default=1, min=1, max=64, optional=True, tooltip=BATCH_SIZE_TOOLTIP),
                io.Boolean.Input("early_stop", default=defaults.EARLY_STOP, optional=True, tooltip=EARLY_STOP_TOOLTIP),
            ],
            outputs=[
                io.Conditioning.Output(display_name="optimized",
                                       tooltip="e_opt: the optimised embedding, same entries and keys as the input."),
                io.LossMap.Output(display_name="loss",
                                  tooltip="Loss per step ({'loss': [...]}), for ComfyUI's Plot Loss Graph."),
            ],
            hidden=[io.Hidden.prompt],  # an Imagic Save Finetune's target_text, checked before training
        )

    @classmethod
    def execute(cls, model, conditioning, latent, steps, learning_rate, seed,
                low_memory=LOW_MEMORY_DEFAULT, batch_size=1, early_stop=defaults.EARLY_STOP) -> io.NodeOutput:
        check_inputs(NODE_ID, model, conditioning, latent)
        check_texts_to_save(cls.hidden.prompt if cls.hidden else None)  # a Save Finetune's text, before training
        start = time.perf_counter()
        with training_mode():
            settings = TrainingSettings(steps, learning_rate, seed, low_memory, batch_size, early_stop)
            optimized, losses = optimize(model, conditioning, latent, settings)
        return io.NodeOutput(optimized, {"loss": losses},
                             ui=loss_ui(TITLE, losses, time.perf_counter() - start, steps,
                                        stopped_at(losses, settings)))


def optimize(model, conditioning, latent, settings: TrainingSettings):
    """(e_opt, losses), trained against a frozen private copy, which is gone when this returns; e_opt carries the
    number of steps trained (``training_run.steps_trained``)."""
    with TrainingSetup(model, latent, settings, train_weights=False) as setup:
        entries = model_entries(conditioning, setup.device, trainable=True)
        losses = setup.run(NODE_ID, TITLE, trained_tensors(entries), entries)
        return with_steps_trained(to_conditioning(conditioning, entries), losses), losses
