"""Labelled picture grids (input | edit, one tile per eta): tiles with a label strip above each.

Pillow and torch only. The font is Pillow's built-in default (scalable when Pillow has FreeType, as its
wheels do), sized to the tile so a label stays legible from 128 px tiles up; nothing is downloaded.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

GAP = 4  # px of background between tiles
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
MIN_FONT = 10
ELLIPSIS = "…"


def font_size(tile_width: int) -> int:
    """14 px on a 128 px tile, growing with the tile up to 40 px."""
    return max(14, min(40, tile_width // 9))


@functools.lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, size: int):
    """The largest font (down to MIN_FONT) that fits ``text`` in ``width``, else the text cut with an ellipsis.

    Linear in the label's length: no glyph of the font is narrower than a pixel, so at most ``width`` characters
    can show and the rest is cut before any measuring; the cut is found by bisection (a 100,000-character label
    takes milliseconds, not minutes)."""
    most = max(int(width), 0)  # widths may be measured lengths (floats)
    cut = len(text) > most
    text = text[:most]
    font = _font(min(size, MIN_FONT) if cut else size)
    if not cut:
        for s in range(size, MIN_FONT - 1, -1):
            font = _font(s)
            if draw.textlength(text, font=font) <= width:
                return text, font
    if draw.textlength(ELLIPSIS, font=font) > width:
        return "", font
    low, high = 0, len(text)  # the longest prefix that fits with the ellipsis: low fits, high + 1 does not
    while low < high:
        middle = (low + high + 1) // 2
        if draw.textlength(text[:middle] + ELLIPSIS, font=font) <= width:
            low = middle
        else:
            high = middle - 1
    return text[:low] + ELLIPSIS, font


def label_strip(text: str, width: int, height: int) -> Image.Image:
    """A ``width`` x ``height`` strip with ``text`` centred on it."""
    strip = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(strip)
    text, font = _fit(draw, text, width - 4, font_size(width))
    if text:
        draw.text((width / 2, height / 2), text, fill=INK, font=font, anchor="mm")
    return strip


def labelled_row(images: list[Image.Image], labels: list[str]) -> Image.Image:
    """The images side by side, each under its label (one row of ``labelled_grid``)."""
    return labelled_grid(images, labels, columns=len(images))


def labelled_grid(images: list[Image.Image], labels: list[str], columns: int = 0,
                  on_tile: Callable[[int, int], None] | None = None) -> Image.Image:
    """Tiles in rows of ``columns`` (0 = one row), each with its label in a strip above it. Tiles of
    different sizes get cells of the largest size, the tile centred in its cell. ``on_tile(done, total)`` is
    called before each tile (a node's progress bar and Cancel)."""
    if not images:
        raise ValueError("no images to lay out")
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    columns = len(images) if columns <= 0 else min(columns, len(images))
    rows = -(-len(images) // columns)
    cell_w = max(im.width for im in images)
    cell_h = max(im.height for im in images)
    strip_h = round(font_size(cell_w) * 1.6) if any(labels) else 0
    grid = Image.new("RGB", (columns * cell_w + (columns - 1) * GAP,
                             rows * (strip_h + cell_h) + (rows - 1) * GAP), BACKGROUND)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        if on_tile is not None:
            on_tile(i, len(images))
        x = (i % columns) * (cell_w + GAP)
        y = (i // columns) * (strip_h + cell_h + GAP)
        if strip_h:
            grid.paste(label_strip(label, cell_w, strip_h), (x, y))
        grid.paste(image.convert("RGB"), (x + (cell_w - image.width) // 2, y + strip_h + (cell_h - image.height) // 2))
    return grid


def tensor_to_pils(images: torch.Tensor) -> list[Image.Image]:
    """A ComfyUI IMAGE batch ([B, H, W, C] floats in 0..1) as one RGB PIL image per frame, quantised as
    ComfyUI's Save Image does (255 * x, truncated), so a tile equals the saved picture."""
    arrays = (images[..., :3].clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
    return [Image.fromarray(a) for a in arrays]


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """One RGB PIL image as a ComfyUI IMAGE batch of one ([1, H, W, 3] floats in 0..1)."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)[None]
