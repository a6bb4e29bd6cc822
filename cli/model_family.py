"""Which model family a .safetensors file holds, told from its tensor names and shapes alone: the file's header
(a few kilobytes of JSON) becomes a state dict of empty tensors on torch's ``meta`` device, and ComfyUI's own
detection (``comfy.model_detection``, what Load Checkpoint and Load Diffusion Model use) names the model. No
weight is read, so a 7 GB checkpoint is told apart in milliseconds. Needs ComfyUI imported (cli/headless.py).
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from .edit_inputs import InputError

# safetensors dtype names -> torch dtype names (the model detection reads shapes; a dtype torch lacks is float32)
DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn",
          "F8_E5M2": "float8_e5m2", "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
          "BOOL": "bool"}
HEADER_LIMIT = 100_000_000  # safetensors' own limit on the header's size


@dataclass(frozen=True)
class Detected:
    family: str  # sd15, sd2, sdxl, sdxl_refiner, sd3, flux, or ComfyUI's config class name for the others
    config: str  # ComfyUI's supported_models class name (SD15, SDXL, Flux, AuraFlow ...)
    checkpoint: bool  # a whole checkpoint (diffusion model under model.diffusion_model.), not the model alone


def header(path: Path) -> dict:
    """The JSON header of a .safetensors file: {tensor name: {"dtype", "shape", "data_offsets"}, ...}."""
    try:
        with open(path, "rb") as f:
            start = f.read(8)
            if len(start) < 8:
                raise ValueError("shorter than a safetensors header")
            (size,) = struct.unpack("<Q", start)
            if size > HEADER_LIMIT:
                raise ValueError(f"header of {size} bytes")
            text = f.read(size)
            if len(text) < size:
                raise ValueError("the header is cut short")
        table = json.loads(text)
        if not isinstance(table, dict):
            raise ValueError("the header is not a JSON object")
        return table
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {path} as a .safetensors file: {e}") from None


def meta_state_dict(path: Path) -> dict:
    """The file's tensors as empty ``meta`` tensors of their shapes and dtypes (no data read)."""
    import torch

    out = {}
    for name, info in header(path).items():
        if name == "__metadata__" or not isinstance(info, dict):
            continue
        dtype = getattr(torch, DTYPES.get(info.get("dtype"), "float32"), torch.float32)
        out[name] = torch.empty(info.get("shape", []), dtype=dtype, device="meta")
    return out


def family_of(config) -> str:
    """The family name cli/family_templates.template_for_family takes, for a ComfyUI model config."""
    import comfy.supported_models as sm

    for cls, family in ((sm.SDXLRefiner, "sdxl_refiner"), (sm.SDXL, "sdxl"), (sm.SD3, "sd3"), (sm.Flux, "flux"),
                        (sm.SD20, "sd2"), (sm.SD15, "sd15")):
        if isinstance(config, cls):
            return family
    return type(config).__name__


def detect(path: Path) -> Detected | None:
    """The family of the diffusion model in the .safetensors file ``path``, as ComfyUI's loaders would detect it
    (a whole checkpoint, or a diffusion model alone such as Flux's); None when ComfyUI knows no model in it."""
    import logging

    import comfy.model_detection as detection

    state_dict = meta_state_dict(path)
    prefix = detection.unet_prefix_from_state_dict(state_dict)
    checkpoint = sum(k.startswith(prefix) for k in state_dict) > 5
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.CRITICAL)  # "no match {...}": said here in our own words
    try:
        config = detection.model_config_from_unet(state_dict, prefix) if checkpoint else None
        if config is None:
            config = detection.model_config_from_unet(state_dict, "")  # a diffusion model alone
            checkpoint = False
    except (KeyError, IndexError, ValueError, TypeError, RuntimeError):
        config = None  # not a model ComfyUI's detection can read
    finally:
        root.setLevel(level)
    if config is None:
        return None
    return Detected(family_of(config), type(config).__name__, checkpoint)
