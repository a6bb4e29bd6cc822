"""ComfyUI CONDITIONING (a list of [tensor, dict]) <-> the per-entry dicts the Imagic loops train on.

An entry dict is what ComfyUI's sampler hands the model: the entry's options plus ``cross_attn``.
Upstream tensors are inference tensors, so every tensor is cloned outside inference mode.
"""
from __future__ import annotations

import torch

TRAINED_KEYS = ("cross_attn", "pooled_output")


def _model_entry(tensor: torch.Tensor, extras: dict, device, trainable: bool) -> dict:
    entry = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in extras.items()}
    entry["cross_attn"] = tensor
    for key in TRAINED_KEYS:
        if isinstance(entry.get(key), torch.Tensor):
            entry[key] = entry[key].detach().to(device, torch.float32).clone().requires_grad_(trainable)
    return entry


def model_entries(conditioning: list, device, trainable: bool = False) -> list[dict]:
    """One entry dict per conditioning entry; with ``trainable`` the text tensors are leaf parameters.

    ``pooled_output`` is trained together with the token embeddings: families that feed it to the model
    (SDXL's ``y`` vector, SD3, Flux) get it optimised, the others leave it untouched (it gets no gradient).
    Must be called outside inference mode.
    """
    return [_model_entry(tensor, extras, device, trainable) for tensor, extras in conditioning]


def trained_tensors(entries: list[dict]) -> list[torch.Tensor]:
    return [e[k] for e in entries for k in TRAINED_KEYS if isinstance(e.get(k), torch.Tensor)]


def to_conditioning(like: list, entries: list[dict]) -> list:
    """CONDITIONING with the structure, keys, dtypes and devices of ``like`` and the tensors of ``entries``."""
    out = []
    for (tensor, extras), entry in zip(like, entries, strict=True):
        extras = extras.copy()
        if isinstance(extras.get("pooled_output"), torch.Tensor):
            ref = extras["pooled_output"]
            extras["pooled_output"] = entry["pooled_output"].detach().to(ref.device, ref.dtype)
        out.append([entry["cross_attn"].detach().to(tensor.device, tensor.dtype), extras])
    return out
