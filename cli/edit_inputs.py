"""What the headless edit reads from the user, checked before anything runs or is written: the photos, the
texts, the batch file (TEdBench format: a JSON list of {"img_name", "target_text"})."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError


class InputError(ValueError):
    """A bad input, said in one line."""


@dataclass(frozen=True)
class Job:
    image: Path  # the photo
    text: str  # the target text
    stem: str  # output file names start with it


def check_image(path: Path) -> Path:
    """``path`` if it is a readable image, else InputError."""
    if not path.exists():
        raise InputError(f"image not found: {path}")
    if not path.is_file():
        raise InputError(f"image is not a file: {path}")
    try:
        with Image.open(path) as image:
            image.load()
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError(f"cannot read image {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    return path


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
