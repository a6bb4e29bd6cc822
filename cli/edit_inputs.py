"""What the headless edit reads from the user, checked before anything runs or is written: the photos, the
texts, the batch file (TEdBench format: a JSON list of {"img_name", "target_text"})."""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


class InputError(ValueError):
    """A bad input, said in one line."""


@dataclass(frozen=True)
class Job:
    image: Path  # the photo
    text: str  # the target text
    stem: str  # output file names start with it


# Pillow's modes for one channel of more than 8 bits: ComfyUI's Load Image divides them by 255 and clips (a
# 16-bit PNG comes out almost white), so the headless edit converts them to 8 bits itself (``comfy_ready``).
WIDE_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def check_image(path: Path) -> Path:
    """``path`` if it is a readable image that Load Image reads correctly (or ``comfy_ready`` converts), else
    InputError."""
    if not path.exists():
        raise InputError(f"image not found: {path}")
    if not path.is_file():
        raise InputError(f"image is not a file: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
    except Image.DecompressionBombError as e:
        pixels = re.search(r"\d+", str(e))
        size = f"{int(pixels.group()) / 1e6:.0f} megapixels, " if pixels else ""
        raise InputError(f"image too large: {path} ({size}more than Pillow opens safely): scale it down to a few "
                         "thousand pixels a side (the edit works at 512)") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError(f"cannot read image {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    if mode == "F":
        raise InputError(f"image {path} has floating-point pixels, which ComfyUI's Load Image cannot read: save it "
                         "as an 8-bit PNG or JPEG")
    return path


def comfy_ready(path: Path, folder: Path, name: str) -> str:
    """Copy the photo into ComfyUI's input ``folder`` as ``name``; a greyscale of more than 8 bits (16-bit PNG)
    is converted to 8 bits (0..65535 -> 0..255) as a PNG first. Returns the file name written."""
    with Image.open(path) as image:
        if image.mode not in WIDE_GREY:
            shutil.copyfile(path, folder / name)
            return name
        pixels = np.asarray(image, dtype=np.float64)
    name = f"{Path(name).stem}.png"
    Image.fromarray(np.clip(np.round(pixels / 257.0), 0, 255).astype(np.uint8), "L").save(folder / name)
    return name


def check_text(text: str, where: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{where}: the target text is empty")
    return text


def single_job(image: Path, text: str) -> list[Job]:
    return [Job(check_image(image), check_text(text, "--text"), image.stem)]


def batch_jobs(batch_file: Path, image_dir: Path) -> list[Job]:
    """The jobs of a TEdBench-style list; every image is checked before the first one runs."""
    try:
        entries = json.loads(batch_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"batch file not found: {batch_file}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read batch file {batch_file}: {e}") from e
    if not isinstance(entries, list) or not entries:
        raise InputError(f"batch file {batch_file}: expected a non-empty JSON list of "
                         '{"img_name": ..., "target_text": ...}')
    if not image_dir.is_dir():
        raise InputError(f"image folder not found: {image_dir}")
    jobs = []
    for number, entry in enumerate(entries, 1):
        where = f"batch file {batch_file}, entry {number}"
        if not isinstance(entry, dict) or not isinstance(entry.get("img_name"), str):
            raise InputError(f'{where}: expected {{"img_name": ..., "target_text": ...}}')
        try:
            image = check_image(image_dir / entry["img_name"])
        except InputError as e:
            raise InputError(f"{where}: {e}") from None
        jobs.append(Job(image, check_text(entry.get("target_text"), where), f"{number:03d}_{image.stem}"))
    return jobs
