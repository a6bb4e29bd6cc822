"""Where an Imagic fine-tune file goes (a prefix inside ComfyUI's loras folder, checked) and how it is written
(atomically: a failed save leaves nothing half-written)."""
from __future__ import annotations

import contextlib
import os
import re
import uuid

import comfy.utils
import folder_paths

from .errors import fail

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


