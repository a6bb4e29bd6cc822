"""Imagic step B: fine-tune the diffusion model on the optimised embedding (full weights or LoRA)."""
from __future__ import annotations

import time

import comfy.model_management
import comfy.sd
from comfy_api.latest import io

from ..core import blocks as parts
from ..core import defaults
from ..core.training import SCHEDULES
from .comfy_model import check_inputs
from .conditioning_io import model_entries
from .errors import fail
from .families import family_name
from .finetune_weights import FullFinetune, LoraFinetune
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

NODE_ID = "ImagicFinetuneUNet"


LORA_BLOCKS_TOOLTIP = (
    "Which part of the network the fine-tune trains, for method lora and full alike (the rest stays frozen and "
    "is not in the result). all: every layer. encoder: the down half (SD1/SD2/SDXL: input and middle blocks; "
    "SD3/Flux: the first half of the transformer blocks). decoder: the up half (output blocks and last layer; "
    "SD3/Flux: the second half); no backward pass runs through the encoder, so each step is cheaper. attention: "
    "the attention projections (q, k, v, out) of every transformer block (Flux single blocks: linear1/linear2, "
    "which hold their MLP too). The time and text embeddings train only with all. Imagic Save Finetune records "
    "the choice.")

SCHEDULE_TOOLTIP = (
    "How the learning rate moves over the steps. linear_decay (default): learning_rate at the first step, down in "
    "equal steps to nearly 0 at the last (never above learning_rate). With a constant rate the last steps' noise "
    "draws leave a faint blotchy texture on flat areas, which depends on the seed; on the shapes benchmark "
    "linear_decay left them flat and edited at least as often (bench/RESULTS.md). constant: learning_rate at every "
    "step (the paper's).")


def title(method: str, lora_blocks: str = defaults.LORA_BLOCKS) -> str:
    """The progress bars' and the loss chart's title."""
    return f"Imagic: finetune ({method})" if lora_blocks == "all" else f"Imagic: finetune ({method}, {lora_blocks})"



def finetuned_model(model, delta: dict):
    """The given MODEL with the fine-tune applied as ComfyUI LoRA patches (what LoraModelLoader gives)."""
    return comfy.sd.load_lora_for_models(model, None, delta, 1.0, 0)[0]


class ImagicFinetuneUNet(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_ID,
            display_name="Imagic Finetune UNet",
            category="Imagic",
            description=(
                "Imagic step B. Fine-tunes the diffusion model so that, conditioned on e_opt, it reconstructs the "
                "input image. Returns the fine-tuned MODEL (the input model plus a LoRA-style patch, stackable with "
                "other LoRAs), the fine-tune itself as a LORA_MODEL for Save LoRA / Imagic Save Finetune, and the "
                "loss. The input model is not changed."),
            inputs=[
                io.Model.Input("model", tooltip="The same diffusion model given to Imagic Optimize Embedding."),
                io.Conditioning.Input("conditioning", tooltip="e_opt, the output of Imagic Optimize Embedding."),
                io.Latent.Input("latent",
                                tooltip="The input photo's latent (the same as for Imagic Optimize Embedding)."),
                io.Int.Input("steps", default=defaults.TUNE_STEPS, min=1, max=100000,
                             tooltip=STEPS_TOOLTIP.format(what="Fine-tuning", steps=defaults.TUNE_STEPS,
                                                          paper=defaults.PAPER["tune_steps"])),
                io.Float.Input("learning_rate", default=defaults.LEARNING_RATE[defaults.TUNE_METHOD], min=0.0, max=1.0,
                               step=1e-7,
                               tooltip="Adam learning rate (the first step's: see learning_rate_schedule): "
                                       f"lora {defaults.LEARNING_RATE['lora']:g}, full "
                                       f"{defaults.LEARNING_RATE['full']:g} (the paper's). "
                                       "Switching method in the graph editor switches between these two while the "
                                       "value is one of them. 0 = the method's default."),
                io.Combo.Input("method", options=list(defaults.LEARNING_RATE), default=defaults.TUNE_METHOD,
                               tooltip="lora: low-rank adapters on every linear/conv weight (light, small file). "
                                       "full: every weight, as in the paper (needs about 4x the model's size in "
                                       "memory). lora_blocks narrows either to a part of the network."),
                io.Int.Input("lora_rank", default=defaults.LORA_RANK, min=1, max=256,
                             tooltip="Rank of the LoRA adapters (method lora only)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the training noise, timesteps and LoRA initialisation."),
                io.Boolean.Input("low_memory", default=LOW_MEMORY_DEFAULT, optional=True, tooltip=LOW_MEMORY_TOOLTIP),
                io.Int.Input("batch_size", default=1, min=1, max=64, optional=True, tooltip=BATCH_SIZE_TOOLTIP),
                io.Boolean.Input("early_stop", default=defaults.EARLY_STOP, optional=True, tooltip=EARLY_STOP_TOOLTIP),
                io.Combo.Input("lora_blocks", options=list(parts.CHOICES), default=defaults.LORA_BLOCKS, optional=True,
                               tooltip=LORA_BLOCKS_TOOLTIP),
                io.Combo.Input("learning_rate_schedule", options=list(SCHEDULES), default=defaults.TUNE_SCHEDULE,
                               optional=True, tooltip=SCHEDULE_TOOLTIP),
            ],
            outputs=[
                io.Model.Output(display_name="model",
                                tooltip="The fine-tuned model: the input model with the fine-tune applied as a patch."),
                io.LoraModel.Output(display_name="lora",
                                    tooltip="The fine-tune as a weight delta in ComfyUI's LoRA key format (Save LoRA, "
                                            "Load LoRA Model, Imagic Save Finetune)."),
                io.LossMap.Output(display_name="loss", tooltip="Loss per step ({'loss': [...]})."),
            ],
            hidden=[io.Hidden.prompt],  # an Imagic Save Finetune's target_text, checked before training
        )

    @classmethod
    def execute(cls, model, conditioning, latent, steps, learning_rate, method, lora_rank, seed,
                low_memory=LOW_MEMORY_DEFAULT, batch_size=1, early_stop=defaults.EARLY_STOP,
                lora_blocks=defaults.LORA_BLOCKS, learning_rate_schedule=defaults.TUNE_SCHEDULE) -> io.NodeOutput:
        check_inputs(NODE_ID, model, conditioning, latent)
        check_texts_to_save(cls.hidden.prompt if cls.hidden else None)  # a Save Finetune's text, before training
        learning_rate = defaults.learning_rate(method, learning_rate)
        start = time.perf_counter()
        with training_mode():
            settings = TrainingSettings(steps, learning_rate, seed, low_memory, batch_size, early_stop,
                                        learning_rate_schedule)
            delta, losses = finetune(model, conditioning, latent, settings, method=method, lora_rank=lora_rank,
                                     lora_blocks=lora_blocks)
        return io.NodeOutput(finetuned_model(model, delta), delta, {"loss": losses},
                             ui=loss_ui(title(method, lora_blocks), losses, time.perf_counter() - start, steps,
                                        stopped_at(losses, settings)))


def finetune(model, conditioning, latent, settings: TrainingSettings, *, method: str = "lora",
             lora_rank: int = defaults.LORA_RANK, lora_blocks: str = defaults.LORA_BLOCKS):
    """(delta, losses) of a fine-tune on a private copy, which is gone (memory free) when this returns; the delta
    carries the number of steps trained and the blocks (``training_run.steps_trained``, ``trained_blocks``)."""
    with TrainingSetup(model, latent, settings, train_weights=method == "full") as setup:
        trainer = make_trainer(model, setup.base, method, lora_rank, settings.seed, lora_blocks)
        entries = model_entries(conditioning, setup.device)
        losses = setup.run(NODE_ID, title(method, lora_blocks), trainer.parameters(), entries)
        return with_steps_trained(trainer.delta(), losses, lora_blocks=lora_blocks), losses


def make_trainer(model, base, method: str, lora_rank: int, seed: int, lora_blocks: str):
    """What trains on the private copy ``base`` of ``model``: its weights (full) or adapters (lora), on the
    chosen blocks; a part that holds no layer of this model is an error that says so."""
    try:
        if method == "full":
            return FullFinetune(base, model.model, comfy.model_management.unet_offload_device(), lora_blocks)
        return LoraFinetune(base, lora_rank, seed, lora_blocks)
    except parts.NoLayerChosen as e:
        raise fail(NODE_ID, f"lora_blocks '{lora_blocks}' selects no layer of this {family_name(model)} model (no "
                            "layer name of the model is in that part)",
                   "set lora_blocks to 'all'") from e
