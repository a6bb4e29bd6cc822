"""Imagic Save Finetune: the fine-tune (UNet delta + e_opt + what it was made from) as ONE .safetensors in
models/loras, loadable by Imagic Load Finetune and by ComfyUI's own LoRA loaders."""
from __future__ import annotations

import logging

import comfy.model_management
import comfy.utils
from comfy_api.latest import io

from ..core import defaults
from ..core import finetune_format as fmt
from .base_model import carries_delta, model_fingerprint, model_shapes
from .comfy_model import context_width
from .errors import fail
from .families import family_name
from .finetune_paths import PREFIX_FIX, loras_folder, prefix_problem, save_path, write_atomic
from .prompt_graph import graph_settings
from .training_run import steps_trained, trained_blocks

NODE_ID = "ImagicSaveFinetune"
LOG = logging.getLogger("comfyui-imagic")


def trained_with(optimized, lora) -> dict:
    """The steps that trained e_opt and the fine-tune, and the blocks the fine-tune covers, as the training nodes
    marked their outputs (early stopping may have ended them before their ``steps``); nothing for values that did
    not come from them."""
    found = {"embedding_steps_trained": steps_trained(optimized), "finetune_steps_trained": steps_trained(lora),
             "lora_blocks": trained_blocks(lora)}
    return {k: v for k, v in found.items() if v is not None}


class ImagicSaveFinetune(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_ID,
            display_name="Imagic Save Finetune",
            category="Imagic",
            description=(
                "Saves an Imagic fine-tune as one .safetensors file in models/loras (so it is in every LoRA list): "
                "the UNet change as ordinary ComfyUI LoRA weights, e_opt, the target text, a suggested eta and a "
                "fingerprint of the base model. Imagic Load Finetune restores all of it to edit again with another "
                "eta or target text without retraining; Load LoRA applies the same UNet change."),
            inputs=[
                io.LoraModel.Input("lora", tooltip="The 'lora' output of Imagic Finetune UNet."),
                io.Conditioning.Input("optimized", tooltip="e_opt: the 'optimized' output of Imagic Optimize Embedding "
                                                           "(the one the fine-tune was trained on)."),
                io.Model.Input("model", tooltip="The base model given to the Imagic nodes (not the fine-tuned one). "
                                                "Its fingerprint is saved, so loading onto another model is detected."),
                io.String.Input("target_text", default="", multiline=True, dynamic_prompts=False,
                                placeholder="empty = the text encoded for Imagic Optimize Embedding",
                                tooltip="The target text, stored for editing again later. Empty = the text of the CLIP "
                                        "Text Encode that feeds Imagic Optimize Embedding."),
                io.String.Input("filename_prefix", default="imagic/finetune",
                                tooltip="File name inside models/loras; may contain subfolders, not '..', an "
                                        "absolute path or a link out of the folder. A counter is added: "
                                        "imagic/finetune_00001_.safetensors."),
                io.Combo.Input("full_storage", options=["exact", "svd"], default="exact",
                               tooltip="For method 'full' only. exact: every changed weight as it is (large: SD1.5 "
                                       "~3.4 GB). svd: a low-rank extraction of rank svd_rank, as ComfyUI's Extract "
                                       "and Save Lora does (small, approximate)."),
                io.Int.Input("svd_rank", default=64, min=1, max=1024,
                             tooltip="Rank of the SVD extraction (full_storage 'svd' only)."),
                io.Float.Input("suggested_eta", default=defaults.ETA, min=-10.0, max=10.0, step=0.01,
                               tooltip="The eta that gave a good edit, stored as a starting point for whoever loads "
                                       "the file."),
            ],
            outputs=[
                io.String.Output(display_name="filename",
                                 tooltip="The saved file's name as the LoRA lists show it (relative to models/loras)."),
            ],
            hidden=[io.Hidden.prompt, io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, filename_prefix=None) -> bool | str:
        """At /prompt time, before any training: the prefix as typed (a linked one is checked when the node runs).
        ComfyUI 0.3.64 reports a failed result against every argument of this signature, so it takes the prefix
        alone; the typed target_text is checked when a training node starts (finetune_file.check_texts_to_save),
        also before any training."""
        problem = prefix_problem(filename_prefix, loras_folder()) if filename_prefix is not None else None
        return str(fail(NODE_ID, problem, PREFIX_FIX)) if problem else True

    @classmethod
    def execute(cls, lora, optimized, model, target_text, filename_prefix, full_storage, svd_rank,
                suggested_eta) -> io.NodeOutput:
        path, name = save_path(NODE_ID, filename_prefix)  # bad prefixes fail before any work
        if not isinstance(lora, dict) or not lora:
            raise fail(NODE_ID, "the lora input is empty", "connect the 'lora' output of Imagic Finetune UNet")
        if not optimized:
            raise fail(NODE_ID, "the optimized input is an empty conditioning",
                       "connect the 'optimized' output of Imagic Optimize Embedding")
        try:
            fmt.check_unet_keys(lora)
            if carries_delta(model, lora):
                raise fmt.FormatError("the model input already contains this fine-tune (it is the fine-tuned model, "
                                      "not the base model)",
                                      "connect the model that feeds Imagic Finetune UNet's 'model' input")
            fmt.check_fits(lora, model_shapes(model))
            fmt.conditioning_to_tensors(optimized)  # its checks, before any long work
        except fmt.FormatError as e:
            raise fail(NODE_ID, e.problem, e.fix) from e
        width = context_width(model)
        if width is not None and any(t.shape[-1] != width for t, _ in optimized):
            raise fail(NODE_ID, f"e_opt is {optimized[0][0].shape[-1]} wide but the model expects {width}",
                       "connect the e_opt made with this model")

        settings = graph_settings(cls.hidden.prompt if cls.hidden else None,
                                  cls.hidden.unique_id if cls.hidden else None)
        if settings.wrong_e_opt:
            raise fail(NODE_ID, settings.wrong_e_opt, "connect the same e_opt (Imagic Optimize Embedding's "
                                                      "'optimized' output) to both nodes")
        text = target_text if target_text.strip() else (settings.target_text or "")
        try:
            fmt.check_text(text)
        except fmt.FormatError as e:
            raise fail(NODE_ID, e.problem, e.fix) from e
        bar = comfy.utils.ProgressBar(1)

        def on_step(done: int, total: int) -> None:
            comfy.model_management.throw_exception_if_processing_interrupted()  # Cancel
            bar.update_absolute(done, total)

        tensors, metadata, dropped = fmt.build_file(
            lora, optimized, storage=full_storage, svd_rank=svd_rank, fingerprint=model_fingerprint(model),
            model_family=family_name(model), target_text=text, suggested_eta=suggested_eta,
            training={**settings.training, **trained_with(optimized, lora)}, on_step=on_step)
        if dropped:
            LOG.warning("%s: these e_opt entry keys are not plain data and are not saved: %s", NODE_ID,
                        ", ".join(dropped))
        comfy.model_management.throw_exception_if_processing_interrupted()
        write_atomic(tensors, metadata, path)
        LOG.info("%s: saved %s", NODE_ID, path)
        return io.NodeOutput(name)
