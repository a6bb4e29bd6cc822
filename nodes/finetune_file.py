"""The Imagic fine-tune file on a ComfyUI host: where it goes, how it is written and read, and what the
base model's fingerprint is. The format itself (keys, metadata, fingerprint maths) is
``core.finetune_format``; the two nodes are ``save_finetune`` and ``load_finetune``.

Safety: files are read with ``safetensors`` only. Nothing here calls ``torch.load`` or unpickles
anything; a ``.pt`` / ``.ckpt`` / ``.bin`` / ``.pth`` file is refused by its name before it is opened.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import uuid
from dataclasses import dataclass

import safetensors
import torch

import comfy.lora
import comfy.utils
import folder_paths

from ..core import defaults
from ..core import finetune_format as fmt
from ..core import fingerprint as fingerprints
from .errors import fail

SAFETENSORS_EXTENSIONS = (".safetensors", ".sft")
LOG = logging.getLogger("comfyui-imagic")
SAVE_NODE_ID = "ImagicSaveFinetune"  # its target_text is checked before training (check_texts_to_save)


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


# ---------------------------------------------------------------------------------------------------
# Where a file goes


PREFIX_FIX = "use a short relative prefix inside the loras folder, such as 'imagic/finetune'"


def loras_folder() -> str:
    return os.path.abspath(folder_paths.get_folder_paths("loras")[0])


MAX_FOLDER_DEPTH = 32  # subfolders a prefix may nest
COUNTER_SUFFIX = len("_00001_.safetensors")  # what the saved name adds to the prefix's last part


def _limit(root: str, name: str, default: int) -> int:
    try:
        return os.pathconf(root, name)
    except (OSError, ValueError, AttributeError):  # no such limit here (Windows)
        return default


def prefix_problem(filename_prefix, root: str) -> str | None:
    """Why ``filename_prefix`` cannot name a file inside the loras folder ``root``, or None. Checks the text
    only (nothing is created): the same answer before training (validation) and when saving."""
    prefix = filename_prefix.strip() if isinstance(filename_prefix, str) else ""
    shown = repr(filename_prefix)[:80] + ("..." if len(repr(filename_prefix)) > 80 else "")
    if not prefix or prefix.endswith(("/", "\\")):
        return f"filename_prefix {shown} has no file name"
    control = next((i for i, c in enumerate(prefix) if ord(c) < 32 or ord(c) == 127), None)
    if control is not None:
        return (f"filename_prefix {shown} contains a control character (U+{ord(prefix[control]):04X} at position "
                f"{control}), which file names must not hold")
    if os.path.isabs(prefix) or prefix.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", prefix):
        return f"filename_prefix {shown} is an absolute path; files are saved only inside ComfyUI's models/loras folder"
    parts = re.split(r"[/\\]+", prefix)
    if ".." in parts:
        return f"filename_prefix {shown} contains '..'; files are saved only inside ComfyUI's models/loras folder"
    if any(part.startswith(".") for part in parts):
        return f"filename_prefix {shown} has a name starting with '.' (a hidden file or folder, which LoRA lists skip)"
    if len(parts) - 1 > MAX_FOLDER_DEPTH:
        return f"filename_prefix {shown} nests {len(parts) - 1} folders; at most {MAX_FOLDER_DEPTH} are allowed"
    name_max, path_max = _limit(root, "PC_NAME_MAX", 255), _limit(root, "PC_PATH_MAX", 4096)
    longest = max(len(part.encode()) + (COUNTER_SUFFIX if i == len(parts) - 1 else 0) for i, part in enumerate(parts))
    if longest > name_max:
        return (f"filename_prefix {shown} makes a file or folder name of {longest} bytes (with the counter "
                f"'_00001_.safetensors'); this file system allows {name_max}")
    if len(os.path.join(root, prefix).encode()) + COUNTER_SUFFIX >= path_max:
        return f"filename_prefix {shown} makes a path longer than this file system allows ({path_max} bytes)"
    real_root = os.path.realpath(root)
    target = os.path.realpath(os.path.join(root, *parts[:-1]))
    if os.path.commonpath((real_root, target)) != real_root:
        return (f"filename_prefix {shown} leads through a symbolic link out of the loras folder (to {target}); "
                "saving never leaves the folder, through a link neither (to save there, add that folder to "
                "ComfyUI's loras paths in extra_model_paths.yaml)")
    return None


def save_path(node_id: str, filename_prefix: str) -> tuple[str, str]:
    """(full path of the next ``<prefix>_<counter>_.safetensors`` in the first loras folder, its name as
    the LoRA dropdowns list it). The prefix may name subfolders but never leave the folder, not even
    through a symbolic link inside it (``prefix_problem``)."""
    root = loras_folder()
    problem = prefix_problem(filename_prefix, root)
    if problem:
        raise fail(node_id, problem, PREFIX_FIX)
    try:
        folder, filename, counter, _, _ = folder_paths.get_save_image_path(filename_prefix.strip(), root)
    except Exception as e:  # ComfyUI's own "outside the output folder" check; an OS error making the folder
        raise fail(node_id, f"filename_prefix {filename_prefix!r} cannot be used in the loras folder ({e})",
                   PREFIX_FIX) from e
    while True:
        path = os.path.join(folder, f"{filename}_{counter:05}_.safetensors")
        if not os.path.exists(path):
            return path, os.path.relpath(path, root)
        counter += 1


def write_atomic(tensors: dict, metadata: dict, path: str) -> None:
    """Write ``path`` completely or not at all: a hidden temp file in the same folder (which no LoRA list
    shows: its name does not end in .safetensors; short, so any name that fits fits it too), flushed to disk,
    then renamed over in one step. Any failure or Cancel before the rename removes the temp file."""
    folder = os.path.dirname(path)
    tmp = os.path.join(folder, f".imagic-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
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


def _node_name(prompt: dict, link) -> str:
    if not _is_link(link):
        return "?"
    return f"#{link[0]} {(prompt.get(link[0]) or {}).get('class_type', '?')}"


def check_texts_to_save(prompt: dict | None) -> None:
    """The target_text typed on every Imagic Save Finetune of the queued prompt, checked by the training nodes
    before they train: a text no fine-tune file can store fails now, not after the training. (Not in the Save
    node's validate_inputs: ComfyUI reports a failure there against each of its arguments, so a bad prefix would
    be reported against target_text too.)"""
    for node_id, node in (prompt or {}).items():
        if not isinstance(node, dict) or node.get("class_type") != SAVE_NODE_ID:
            continue
        text = _literal(prompt, (node.get("inputs") or {}).get("target_text"))
        if isinstance(text, str):
            try:
                fmt.check_text(text)
            except fmt.FormatError as e:
                raise fail(SAVE_NODE_ID, f"(node #{node_id}, checked before training) {e.problem}", e.fix) from e


@dataclass
class GraphSettings:
    training: dict  # core.finetune_format.TRAINING_FIELDS that the graph gives
    target_text: str | None  # the text of the CLIP Text Encode feeding Imagic Optimize Embedding
    wrong_e_opt: str | None  # why the 'optimized' input is not the e_opt the fine-tune was trained on


def graph_settings(prompt: dict | None, unique_id) -> GraphSettings:
    """Steps, learning rates and seeds of the Imagic nodes feeding the Save node's ``lora`` and
    ``optimized`` inputs, read from the queued prompt (what the user set on those nodes)."""
    out = GraphSettings({}, None, None)
    me = (prompt or {}).get(str(unique_id))
    if not me:
        return out
    tune = _source(prompt, me, "lora", "ImagicFinetuneUNet")
    if tune:
        inputs = tune["inputs"]
        method = _literal(prompt, inputs.get("method"))
        lr = _literal(prompt, inputs.get("learning_rate"))
        if method in defaults.LEARNING_RATE and isinstance(lr, (int, float)):
            lr = defaults.learning_rate(method, lr)
        out.training.update(finetune_steps=_literal(prompt, inputs.get("steps")), finetune_learning_rate=lr,
                            finetune_seed=_literal(prompt, inputs.get("seed")))
        trained_on, given = inputs.get("conditioning"), me["inputs"].get("optimized")
        if trained_on != given:
            out.wrong_e_opt = (f"the 'optimized' input (from node {_node_name(prompt, given)}) is not the e_opt the "
                               f"fine-tune was trained on (Imagic Finetune UNet's conditioning, from node "
                               f"{_node_name(prompt, trained_on)})")
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
