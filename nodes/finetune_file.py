"""Reading an Imagic fine-tune file on a ComfyUI host (with a cache of the last file read). The format itself
(keys, metadata) is ``core.finetune_format``; the nodes are ``save_finetune`` and ``load_finetune``.

Safety: files are read with ``safetensors`` only. Nothing here calls ``torch.load`` or unpickles
anything; a ``.pt`` / ``.ckpt`` / ``.bin`` / ``.pth`` file is refused by its name before it is opened.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import safetensors

import folder_paths

from ..core import finetune_format as fmt
from .errors import fail

SAFETENSORS_EXTENSIONS = (".safetensors", ".sft")
LOG = logging.getLogger("comfyui-imagic")


@dataclass
class LoadedFinetune:
    info: fmt.FinetuneInfo
    unet: dict  # diffusion_model.* tensors, ready for comfy.sd.load_lora_for_models
    e_opt: list  # CONDITIONING


_CACHE: dict = {}  # the last file read: {(path, mtime_ns, size): LoadedFinetune}


def file_state(name: str):
    path = folder_paths.get_full_path("loras", name)
    if path is None:
        return name
    st = os.stat(path)
    return path, st.st_mtime_ns, st.st_size


def read_finetune(node_id: str, name: str) -> LoadedFinetune:
    """Open, check and decode the Imagic file ``name`` (as listed in the loras folder); every failure is
    an error that names the file and the fix."""
    path = folder_paths.get_full_path("loras", name)
    if path is None:
        raise fail(node_id, f"'{name}' is not in the loras folder",
                   "pick a file from the list (refresh the page if it is new)")
    ext = os.path.splitext(name)[1].lower()
    if ext not in SAFETENSORS_EXTENSIONS:
        raise fail(node_id, f"'{name}' is a '{ext}' file. Imagic fine-tunes are .safetensors; '{ext}' files are "
                            "Python pickles that can run code when opened, so this node never opens them",
                   "pick a .safetensors file saved by Imagic Save Finetune")
    key = file_state(name)
    if key in _CACHE:
        return _CACHE[key]
    damaged = ("the file is corrupt or incomplete (an interrupted copy or download?): copy it again, or save the "
               "fine-tune again")
    try:
        with safetensors.safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            if not fmt.is_imagic(metadata):
                raise fail(node_id, f"'{name}' is a plain LoRA, not an Imagic fine-tune (it has no Imagic metadata, "
                                    "so no e_opt and no base model fingerprint)",
                           "load it with Load LoRA (LoraLoaderModelOnly), or pick a file saved by Imagic Save Finetune")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (safetensors.SafetensorError, OSError) as e:
        raise fail(node_id, f"'{name}' cannot be read as safetensors ({e})", damaged) from e
    try:
        info = fmt.read_metadata(metadata)
        unet, e_opt_tensors = fmt.split_tensors(tensors)
        if fmt.tensors_digest(tensors) != info.digest:
            raise fmt.FormatError("its tensors do not match the checksum saved with them (the data is damaged)",
                                  damaged)
        if not unet:
            raise fmt.FormatError("it holds no UNet weights", damaged)
        bad = fmt.first_nonfinite(tensors)
        if bad:
            raise fmt.FormatError(f"its tensor '{bad}' holds NaN or infinite values", damaged)
        e_opt = fmt.conditioning_from_tensors(e_opt_tensors, info.e_opt_layout)
    except fmt.FormatError as e:
        raise fail(node_id, f"'{name}': {e.problem}", e.fix) from e
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, RuntimeError) as e:  # edited data
        problem = f"'{name}' has Imagic data that cannot be decoded ({type(e).__name__}: {e})"
        raise fail(node_id, problem, damaged) from e
    loaded = LoadedFinetune(info, unet, e_opt)
    _CACHE.clear()
    _CACHE[key] = loaded
    return loaded


