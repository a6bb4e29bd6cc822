"""The base model a fine-tune belongs to, on a ComfyUI host: its weights' names and shapes, its fingerprint
(``core.fingerprint``) as it computes, and whether a MODEL already carries a given delta."""
from __future__ import annotations

import math

import torch

import comfy.lora

from ..core import finetune_format as fmt
from ..core import fingerprint as fingerprints


def _unet_weights(model) -> dict[str, list]:
    """ComfyUI's own view of the diffusion model's weights: key -> [(weight, convert), *patches], with
    the original weight even while a patched copy of the model is loaded (``ModelPatcher.get_key_patches``,
    as the model merging and checkpoint saving nodes use it)."""
    return model.get_key_patches(fmt.UNET_PREFIX)


def model_shapes(model) -> dict[str, tuple]:
    return {k[len(fmt.UNET_PREFIX):]: tuple(v[0][0].shape) for k, v in _unet_weights(model).items()}


def model_fingerprint(model) -> dict:
    """``core.fingerprint.fingerprint`` of the model as it computes: its LoRAs/patches applied to the
    sampled tensors (only those are computed). Nothing is loaded to the GPU or written."""
    entries = _unet_weights(model)
    shapes = {k[len(fmt.UNET_PREFIX):]: tuple(v[0][0].shape) for k, v in entries.items()}

    def value(name: str) -> torch.Tensor:
        key = fmt.UNET_PREFIX + name
        (weight, convert), *patches = entries[key]
        if not patches:
            return weight
        w = convert(weight.to(torch.float32, copy=True), inplace=True)
        return comfy.lora.calculate_weight(patches, w, key)

    with torch.inference_mode():
        return fingerprints.fingerprint(shapes, value)


def carries_delta(model, delta: dict, weights: int = 16) -> bool:
    """True when ``model`` already computes with ``delta`` applied (the fine-tuned MODEL, not the base): on the
    weights ``delta`` changes, the model's own patches hold at least half of the delta's change. Compared by
    values, so a copy read back from a file (Load LoRA, Imagic Load Finetune, an SVD-stored ``full``) counts
    like Imagic Finetune UNet's own output, and an unrelated LoRA on the base does not. Up to ``weights``
    weights, spread over the delta, are compared. (A fine-tune merged into a checkpoint's weights has no
    patches left to compare: that is not detected.)"""
    patches = comfy.lora.load_lora(delta, comfy.lora.model_lora_keys_unet(model.model, {}), log_missing=False)
    entries = _unet_weights(model)
    names = sorted(k for k in patches if isinstance(k, str) and k in entries)
    inner = norm = 0.0
    with torch.inference_mode():
        for key in names[:: max(1, math.ceil(len(names) / weights))]:
            (weight, convert), *model_patches = entries[key]
            w = convert(weight.to(torch.float32, copy=True), inplace=True)
            d = comfy.lora.calculate_weight([(1.0, patches[key], 1.0, None, None)], w.clone(), key) - w
            m = comfy.lora.calculate_weight(model_patches, w.clone(), key) - w if model_patches else 0 * w
            inner += float((m.double() * d.double()).sum())
            norm += float((d.double() ** 2).sum())
    return norm > 0 and inner > 0.5 * norm


