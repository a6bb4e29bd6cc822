"""Imagic Load Finetune: a saved Imagic file back into the graph -- the fine-tuned MODEL, e_opt, the target
text and the suggested eta -- so a new eta or a new target text needs no retraining."""
from __future__ import annotations

import logging

import comfy.sd
import folder_paths
from comfy_api.latest import io

from ..core import finetune_format as fmt
from ..core import fingerprint as fingerprints
from .base_model import model_fingerprint, model_shapes
from .errors import fail
from .finetune_file import file_state, read_finetune

NODE_ID = "ImagicLoadFinetune"
LOG = logging.getLogger("comfyui-imagic")
CHECKS = ["warn", "error", "off"]


def _show_on_node(node_id, text: str) -> None:
    """The warning as text on the node in the graph editor (and in the console via logging)."""
    try:
        from server import PromptServer

        server = PromptServer.instance
        if node_id is not None and server is not None and getattr(server, "client_id", None) is not None:
            server.send_progress_text(text, node_id)
    except Exception as e:  # headless use: the console line is enough
        LOG.debug("no progress text on the node: %s", e)


class ImagicLoadFinetune(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_ID,
            display_name="Imagic Load Finetune",
            category="Imagic",
            description=(
                "Loads a file saved by Imagic Save Finetune: applies the fine-tune to the model (as Load LoRA does) "
                "and returns e_opt, the stored target text and the suggested eta, to edit again with another eta or "
                "target text (encode it with CLIP Text Encode, then Imagic Interpolate Conditioning) without "
                "retraining. Checks that the model is the one the fine-tune was made from."),
            inputs=[
                io.Combo.Input("lora_name", options=folder_paths.get_filename_list("loras"),
                               tooltip="An Imagic fine-tune in models/loras (saved by Imagic Save Finetune). Other "
                                       "files are refused with an error; pickle files (.pt, .ckpt) are never opened."),
                io.Model.Input("model", tooltip="The base model the fine-tune was made from (the same checkpoint)."),
                io.Float.Input("strength", default=1.0, min=-10.0, max=10.0, step=0.01,
                               tooltip="How much of the fine-tune to apply to the model: 1 = as trained, 0 = none."),
                io.Combo.Input("fingerprint_check", options=CHECKS, default="warn",
                               tooltip="What to do when the model is not the fine-tune's base model. warn: apply "
                                       "anyway and warn (an architecture mismatch is still an error); error: stop; "
                                       "off: do not check."),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The model with the fine-tune applied (a LoRA patch)."),
                io.Conditioning.Output(display_name="optimized",
                                       tooltip="The stored e_opt, every entry with its pooled_output: the 'optimized' "
                                               "input of Imagic Interpolate Conditioning."),
                io.String.Output(display_name="target_text",
                                 tooltip="The stored target text; edit it or encode it as is with CLIP Text Encode."),
                io.Float.Output(display_name="suggested_eta", tooltip="The eta stored when the fine-tune was saved."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def fingerprint_inputs(cls, lora_name, **kwargs):
        return file_state(lora_name)  # a file replaced under the same name is read again

    @classmethod
    def execute(cls, lora_name, model, strength, fingerprint_check) -> io.NodeOutput:
        loaded = read_finetune(NODE_ID, lora_name)
        info = loaded.info
        if fingerprint_check != "off":
            check = fingerprints.compare_fingerprints(info.fingerprint, model_fingerprint(model))
            if not check.same:
                problem = (f"'{lora_name}' was made from another base model ({info.model_family or 'unknown family'}): "
                           f"{check.detail}")
                fix = ("connect the checkpoint the fine-tune was made from (the same file, any precision), or set "
                       "fingerprint_check to 'off' to apply it anyway")
                if fingerprint_check == "error" or check.architecture_differs:
                    raise fail(NODE_ID, problem, fix)
                message = f"{NODE_ID}: WARNING {problem}; the edit may be wrong. Fix: {fix}"
                LOG.warning(message)
                _show_on_node(cls.hidden.unique_id if cls.hidden else None, message)
        try:  # even with fingerprint_check off: a tensor that fits no weight would be skipped with a log line
            fmt.check_fits(loaded.unet, model_shapes(model))
        except fmt.FormatError as e:
            raise fail(NODE_ID, f"'{lora_name}': {e.problem}", "pick the fine-tune made from this model, or save "
                                                               "it again if the file was edited") from e
        patched = model if strength == 0 else comfy.sd.load_lora_for_models(model, None, loaded.unet, strength, 0)[0]
        return io.NodeOutput(patched, loaded.e_opt, info.target_text, float(info.suggested_eta))
