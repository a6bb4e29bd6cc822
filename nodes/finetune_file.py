"""The Imagic fine-tune file on a ComfyUI host: where it goes, how it is written and read, and what the
base model's fingerprint is. The format itself (keys, metadata, fingerprint maths) is
``core.finetune_format``; the two nodes are ``save_finetune`` and ``load_finetune``.

Safety: files are read with ``safetensors`` only. Nothing here calls ``torch.load`` or unpickles
anything; a ``.pt`` / ``.ckpt`` / ``.bin`` / ``.pth`` file is refused by its name before it is opened.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass

import safetensors
import torch

import comfy.lora
import comfy.utils
import folder_paths

from ..core import finetune_format as fmt
from .errors import fail

SAFETENSORS_EXTENSIONS = (".safetensors", ".sft")
LOG = logging.getLogger("comfyui-imagic")


# ---------------------------------------------------------------------------------------------------
# The base model


def _unet_weights(model) -> dict[str, list]:
    """ComfyUI's own view of the diffusion model's weights: key -> [(weight, convert), *patches], with
    the original weight even while a patched copy of the model is loaded (``ModelPatcher.get_key_patches``,
    as the model merging and checkpoint saving nodes use it)."""
    return model.get_key_patches(fmt.UNET_PREFIX)


def model_shapes(model) -> dict[str, tuple]:
    return {k[len(fmt.UNET_PREFIX):]: tuple(v[0][0].shape) for k, v in _unet_weights(model).items()}


def model_fingerprint(model) -> dict:
    """``core.finetune_format.fingerprint`` of the model as it computes: its LoRAs/patches applied to the
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
        return fmt.fingerprint(shapes, value)


def _tensor_ids(obj, out: set, depth: int = 0) -> set:
    if depth > 4:
        return out
    if isinstance(obj, torch.Tensor):
        out.add(id(obj))
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            _tensor_ids(x, out, depth + 1)
    elif hasattr(obj, "weights"):  # comfy.weight_adapter adapters keep their tensors in .weights
        _tensor_ids(obj.weights, out, depth + 1)
    return out


def carries_delta(model, delta: dict) -> bool:
    """True when ``model`` already has ``delta``'s tensors among its patches (it is the fine-tuned MODEL
    output of Imagic Finetune UNet, or Load LoRA Model of this LORA_MODEL), not the base model."""
    ids = set()
    for patch_list in model.patches.values():
        _tensor_ids(patch_list, ids)
    return any(id(v) in ids for v in delta.values())


# ---------------------------------------------------------------------------------------------------
# Where a file goes


def loras_folder() -> str:
    return os.path.abspath(folder_paths.get_folder_paths("loras")[0])


def save_path(node_id: str, filename_prefix: str) -> tuple[str, str]:
    """(full path of the next ``<prefix>_<counter>_.safetensors`` in the first loras folder, its name as
    the LoRA dropdowns list it). The prefix may name subfolders but never leave the folder."""
    prefix = (filename_prefix or "").strip()
    fix = "use a relative prefix inside the loras folder, such as 'imagic/finetune'"
    if not prefix or prefix.endswith(("/", "\\")):
        raise fail(node_id, f"filename_prefix '{filename_prefix}' has no file name", fix)
    if os.path.isabs(prefix) or prefix.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", prefix):
        raise fail(node_id, f"filename_prefix '{filename_prefix}' is an absolute path; files are saved only "
                            "inside ComfyUI's models/loras folder", fix)
    if any(part == ".." for part in re.split(r"[/\\]", prefix)):
        raise fail(node_id, f"filename_prefix '{filename_prefix}' contains '..'; files are saved only inside "
                            "ComfyUI's models/loras folder", fix)
    root = loras_folder()
    try:
        folder, filename, counter, _, _ = folder_paths.get_save_image_path(prefix, root)
    except Exception as e:  # its own "outside the output folder" check (e.g. through a symlink)
        raise fail(node_id, f"filename_prefix '{filename_prefix}' points outside the loras folder ({e})", fix) from e
    while True:
        path = os.path.join(folder, f"{filename}_{counter:05}_.safetensors")
        if not os.path.exists(path):
            return path, os.path.relpath(path, root)
        counter += 1


def write_atomic(tensors: dict, metadata: dict, path: str) -> None:
    """Write ``path`` completely or not at all: a hidden temp file in the same folder (which no LoRA list
    shows: its name does not end in .safetensors), flushed to disk, then renamed over in one step.
    Any failure or Cancel before the rename removes the temp file."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        comfy.utils.save_torch_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    with contextlib.suppress(OSError, AttributeError):  # make the rename itself durable (POSIX)
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------------------
# Reading a file


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
        raise fail(node_id, f"'{name}' is not in the loras folder", "pick a file from the list (refresh the page if it is new)")
    ext = os.path.splitext(name)[1].lower()
    if ext not in SAFETENSORS_EXTENSIONS:
        raise fail(node_id, f"'{name}' is a '{ext}' file. Imagic fine-tunes are .safetensors; '{ext}' files are "
                            "Python pickles that can run code when opened, so this node never opens them",
                   "pick a .safetensors file saved by Imagic Save Finetune")
    key = file_state(name)
    if key in _CACHE:
        return _CACHE[key]
    damaged = "the file is corrupt or incomplete (an interrupted copy or download?): copy it again, or save the fine-tune again"
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
            raise fmt.FormatError("its tensors do not match the checksum saved with them (the data is damaged)", damaged)
        if not unet:
            raise fmt.FormatError("it holds no UNet weights", damaged)
        e_opt = fmt.conditioning_from_tensors(e_opt_tensors, info.e_opt_layout)
    except fmt.FormatError as e:
        raise fail(node_id, f"'{name}': {e.problem}", e.fix) from e
    loaded = LoadedFinetune(info, unet, e_opt)
    _CACHE.clear()
    _CACHE[key] = loaded
    return loaded


# ---------------------------------------------------------------------------------------------------
# What the graph says about the training (the hidden PROMPT)


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _literal(prompt: dict, value):
    """A widget value, also through one primitive node (PrimitiveInt/Float/String: input 'value')."""
    if not _is_link(value):
        return value
    source = prompt.get(value[0]) or {}
    inner = (source.get("inputs") or {}).get("value")
    return None if inner is None or _is_link(inner) else inner


def _source(prompt: dict, node: dict, name: str, class_type: str) -> dict | None:
    link = (node.get("inputs") or {}).get(name)
    if not _is_link(link):
        return None
    source = prompt.get(link[0])
    return source if source and source.get("class_type") == class_type else None


@dataclass
class GraphSettings:
    training: dict  # core.finetune_format.TRAINING_FIELDS that the graph gives
    target_text: str | None  # the text of the CLIP Text Encode feeding Imagic Optimize Embedding
    notes: list


def graph_settings(prompt: dict | None, unique_id, default_learning_rate: dict) -> GraphSettings:
    """Steps, learning rates and seeds of the Imagic nodes feeding the Save node's ``lora`` and
    ``optimized`` inputs, read from the queued prompt (what the user set on those nodes)."""
    out = GraphSettings({}, None, [])
    me = (prompt or {}).get(str(unique_id))
    if not me:
        return out
    tune = _source(prompt, me, "lora", "ImagicFinetuneUNet")
    if tune:
        inputs = tune["inputs"]
        method = _literal(prompt, inputs.get("method"))
        lr = _literal(prompt, inputs.get("learning_rate"))
        if lr in (0, 0.0) and method in default_learning_rate:
            lr = default_learning_rate[method]
        out.training.update(finetune_steps=_literal(prompt, inputs.get("steps")), finetune_learning_rate=lr,
                            finetune_seed=_literal(prompt, inputs.get("seed")))
        if inputs.get("conditioning") != me["inputs"].get("optimized"):
            out.notes.append("the 'optimized' input is not the e_opt the fine-tune was trained on")
    embed = _source(prompt, me, "optimized", "ImagicOptimizeEmbedding")
    if embed:
        inputs = embed["inputs"]
        out.training.update(embedding_steps=_literal(prompt, inputs.get("steps")),
                            embedding_learning_rate=_literal(prompt, inputs.get("learning_rate")),
                            embedding_seed=_literal(prompt, inputs.get("seed")))
        encode = _source(prompt, embed, "conditioning", "CLIPTextEncode")
        text = _literal(prompt, encode["inputs"].get("text")) if encode else None
        if isinstance(text, str):
            out.target_text = text
    out.training = {k: v for k, v in out.training.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return out
