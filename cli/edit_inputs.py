"""What the headless edit reads from the user, checked before anything runs or is written: the photos, the
texts, the batch file (TEdBench format: a JSON list of {"img_name", "target_text"})."""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


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


def check_image(path: Path, what: str = "image") -> Path:
    """``path`` if it is a readable image that Load Image reads correctly (or ``comfy_ready`` converts), else
    InputError (``what``: the word the message uses for it)."""
    if not path.exists():
        raise InputError(f"{what} not found: {path}")
    if not path.is_file():
        raise InputError(f"{what} is not a file: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
    except Image.DecompressionBombError as e:
        pixels = re.search(r"\d+", str(e))
        size = f"{int(pixels.group()) / 1e6:.0f} megapixels, " if pixels else ""
        raise InputError(f"{what} too large: {path} ({size}more than Pillow opens safely): scale it down to a few "
                         "thousand pixels a side (the edit works at 512)") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError(f"cannot read {what} {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    if mode == "F":
        raise InputError(f"{what} {path} has floating-point pixels, which ComfyUI's Load Image cannot read: save it "
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


def picture_size(path: Path) -> tuple[int, int]:
    """(width, height) of a picture as ComfyUI's loaders see it (EXIF orientation applied)."""
    with Image.open(path) as image:
        width, height = image.size
        if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # rotated a quarter turn
            width, height = height, width
    return width, height


def mask_pixels(path: Path) -> np.ndarray:
    """The mask as 8-bit grey, white = edit: its alpha where it has transparency (opaque = edit), else its grey
    (a 16-bit grey scaled to 8 bits), EXIF orientation applied as Load Image applies it."""
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened)
        if "A" in image.getbands() or "transparency" in image.info:
            alpha = image.convert("RGBA").getchannel("A")
            if alpha.getextrema()[0] < 255:
                return np.asarray(alpha)
        if image.mode in WIDE_GREY:
            return np.clip(np.round(np.asarray(image, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8)
        return np.asarray(image.convert("L"))


def check_mask(path: Path, photo: tuple[int, int]) -> Path:
    """``path`` if it is a readable mask of the photo's size (``photo``: width, height) with something to edit,
    else InputError. A mask of another size is refused, not resized: stretched, it would cover another place."""
    check_image(path, "mask")
    size = picture_size(path)
    if size != tuple(photo):
        raise InputError(f"--mask {path} is {size[0]} x {size[1]} pixels but the photo is {photo[0]} x {photo[1]}: "
                         "give a mask of the photo's size (it is not resized, which would move it)")
    if mask_pixels(path).max() == 0:
        raise InputError(f"--mask {path} is black everywhere, so nothing would be edited: paint white where the "
                         "edit goes")
    return path


def mask_ready(path: Path, folder: Path, name: str) -> str:
    """The mask as an 8-bit grey PNG (white = edit, ``mask_pixels``) in ComfyUI's input ``folder``; returns its
    file name, for Load Image (as Mask) reading the red channel."""
    name = f"{Path(name).stem}.png"
    Image.fromarray(mask_pixels(path), "L").save(folder / name)
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
