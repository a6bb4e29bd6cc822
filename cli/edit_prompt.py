"""Where the headless edit puts its settings in the imagic_edit workflow (API format).

Nodes are found by what they are, not by their ids, so an edited copy of the workflow (``--workflow``) works
as long as it keeps one Load Image, one Imagic Optimize Embedding (fed by the target text's CLIP Text Encode),
one Imagic Finetune UNet, one Imagic Interpolate Conditioning and one Save Image for the edit (a Save Image
fed by Imagic Labelled Grid saves the labelled input | edit).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

from ..core import defaults

GRID = "ImagicLabelledGrid"
MASK_LOADER = "LoadImageMask"  # imagic_edit_masked's mask (white = edit)


class PromptError(ValueError):
    """The workflow does not have the shape the headless edit needs."""


def nodes_of(prompt: dict, class_type: str) -> list[str]:
    return [node_id for node_id, node in prompt.items() if node["class_type"] == class_type]


def one(prompt: dict, class_type: str) -> str:
    found = nodes_of(prompt, class_type)
    if len(found) != 1:
        raise PromptError(f"the workflow needs exactly one {class_type} node, it has {len(found)}")
    return found[0]


def linked_node(prompt: dict, node_id: str, input_name: str) -> str | None:
    value = prompt[node_id]["inputs"].get(input_name)
    return str(value[0]) if isinstance(value, list) and len(value) == 2 else None


def target_encoder(prompt: dict) -> str:
    """The CLIP Text Encode whose text is the target (it feeds Imagic Optimize Embedding)."""
    source = linked_node(prompt, one(prompt, "ImagicOptimizeEmbedding"), "conditioning")
    if source is None or prompt[source]["class_type"] != "CLIPTextEncode":
        raise PromptError("Imagic Optimize Embedding's conditioning does not come from a CLIP Text Encode node")
    return source


def _set(prompt: dict, class_type: str, **values) -> None:
    for node_id in nodes_of(prompt, class_type):
        prompt[node_id]["inputs"].update({k: v for k, v in values.items() if v is not None})


@dataclass(frozen=True)
class EditSettings:
    """What the command line sets; None keeps the workflow's value."""

    ckpt: str | None = None
    embed_steps: int | None = None
    tune_steps: int | None = None
    method: str | None = None
    sample_steps: int | None = None
    seed: int | None = None
    size: int | None = None


def apply_settings(prompt: dict, settings: EditSettings) -> dict:
    """A copy of ``prompt`` with the settings shared by every image and eta of a run."""
    out = copy.deepcopy(prompt)
    target_encoder(out)  # fail early on a workflow without the Imagic chain
    for class_type in ("LoadImage", "ImagicFinetuneUNet", "ImagicInterpolateConditioning"):
        one(out, class_type)
    the_edit_saver(out)
    _set(out, "CheckpointLoaderSimple", ckpt_name=settings.ckpt)
    _set(out, "ImagicOptimizeEmbedding", steps=settings.embed_steps, seed=settings.seed)
    _set(out, "ImagicFinetuneUNet", steps=settings.tune_steps, method=settings.method, seed=settings.seed)
    if settings.method is not None:  # a method's default learning rate in the workflow: the new method's (0)
        for node_id in nodes_of(out, "ImagicFinetuneUNet"):
            inputs = out[node_id]["inputs"]
            if defaults.is_method_default(inputs.get("learning_rate")):
                inputs["learning_rate"] = defaults.METHOD_DEFAULT
    _set(out, "KSampler", steps=settings.sample_steps, seed=settings.seed)
    _set(out, "ImageScale", width=settings.size, height=settings.size)
    _set(out, "EmptyLatentImage", width=settings.size, height=settings.size)
    return out


def the_edit_saver(prompt: dict) -> str:
    """The one Save Image that saves the edit itself (not fed by an Imagic Labelled Grid)."""
    savers = [n for n in nodes_of(prompt, "SaveImage") if not _from_grid(prompt, n)]
    if len(savers) != 1:
        raise PromptError(f"the workflow needs exactly one Save Image for the edit (not fed by {GRID}), "
                          f"it has {len(savers)}")
    return savers[0]


def _from_grid(prompt: dict, node_id: str) -> bool:
    source = linked_node(prompt, node_id, "images")
    return source is not None and prompt[source]["class_type"] == GRID


def for_edit(prompt: dict, image: str, text: str, eta: float, prefix: str, mask: str | None = None) -> dict:
    """A copy of ``prompt`` for one image, target text and eta, saving the edit under ``prefix`` and the
    labelled input | edit picture (where the workflow has one) under ``prefix_input_edit``, its edit labelled
    with the eta Imagic Interpolate Conditioning outputs (Imagic Auto Eta's chosen one once ``use_auto_eta``
    has rewired it). ``mask``: the greyscale mask file (white = edit) for the workflow's one Load Image (as Mask),
    read from its red channel (imagic_edit_masked)."""
    out = copy.deepcopy(prompt)
    out[one(out, "LoadImage")]["inputs"]["image"] = image
    if mask is not None:
        out[one(out, MASK_LOADER)]["inputs"].update(image=mask, channel="red")
    out[target_encoder(out)]["inputs"]["text"] = text
    mix = one(out, "ImagicInterpolateConditioning")
    out[mix]["inputs"]["eta"] = eta
    saver = the_edit_saver(out)
    out[saver]["inputs"]["filename_prefix"] = prefix
    edit = linked_node(out, saver, "images")  # what decodes the edit
    for other in nodes_of(out, "SaveImage"):
        if _from_grid(out, other):
            out[other]["inputs"]["filename_prefix"] = f"{prefix}_input_edit"
            grid = out[linked_node(out, other, "images")]["inputs"]
            tile = next((k for k, v in grid.items() if k.startswith("images") and isinstance(v, list)
                         and len(v) == 2 and str(v[0]) == edit), None)
            if tile is None:
                grid["labels"] = f"input\nedit, eta {eta:g}"
            else:
                grid["labels"] = "input\nedit, eta {eta}"
                grid["eta" + tile.removeprefix("images")] = [mix, 1]  # the eta output of Interpolate
    return out


def save_finetune(prompt: dict, prefix: str, eta: float) -> dict:
    """A copy of ``prompt`` whose Imagic Save Finetune node saves as ``prefix`` with ``eta`` as suggested eta."""
    out = copy.deepcopy(prompt)
    out[one(out, "ImagicSaveFinetune")]["inputs"].update(filename_prefix=prefix, suggested_eta=eta, target_text="")
    return out


def without(prompt: dict, class_type: str) -> dict:
    """A copy of ``prompt`` without the ``class_type`` nodes (nothing may be linked to them)."""
    return {k: copy.deepcopy(v) for k, v in prompt.items() if v["class_type"] != class_type}
