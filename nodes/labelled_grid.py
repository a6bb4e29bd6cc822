"""Imagic Labelled Grid: several pictures as one, each under its label (input | edit, one tile per eta)."""
from __future__ import annotations

import comfy.model_management
import comfy.utils
from comfy_api.latest import io

from ..core.grid import labelled_grid, pil_to_tensor, tensor_to_pils
from .errors import fail

NODE_ID = "ImagicLabelledGrid"
MORE = 7  # optional image inputs after the first: 8 in all
ETA = "{eta}"  # in a label: the eta wired beside the tile's images input
SUFFIXES = ["", *[f"_{i}" for i in range(2, MORE + 2)]]  # images, images_2, ... and eta, eta_2, ...


def eta_text(eta: float) -> str:
    return f"{eta:g}"


def fill_labels(node_id: str, names: list[str], sources: list[str], etas: dict) -> list[str]:
    """Each ``{eta}`` in a tile's label replaced by the eta wired beside the tile's images input."""
    out = []
    for line, (name, suffix) in enumerate(zip(names, sources, strict=True), 1):
        if ETA in name:
            eta = etas.get(f"eta{suffix}")
            if eta is None:
                raise fail(node_id, f"label line {line} ('{name}') says {ETA} but nothing is connected to "
                                    f"eta{suffix}, beside its tile's input images{suffix}",
                           f"connect the eta output of the Imagic Interpolate Conditioning (or Imagic Auto Eta) "
                           f"that made that tile to eta{suffix}, or write the number in the label")
            name = name.replace(ETA, eta_text(eta))
        out.append(name)
    return out


def split_labels(labels: str) -> list[str]:
    """One label per line; trailing empty lines dropped."""
    lines = labels.replace("\r\n", "\n").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.strip() for line in lines]


class ImagicLabelledGrid(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_ID,
            display_name="Imagic Labelled Grid",
            category="Imagic",
            description=(
                "Lays out pictures as one, each with its label written above it: the input photo next to the edit, "
                "or one tile per eta. Every frame of every connected input is one tile, in input order; the labels "
                "are one line per tile; '{eta}' in a label is the eta wired beside the tile's input, so the label "
                "follows the eta widget it comes from. Tiles of different sizes are centred in cells of the largest "
                "size. The built-in font has Latin letters only: other scripts and emoji show as boxes."),
            inputs=[
                io.Image.Input("images", tooltip="The first tile(s), e.g. the input photo. A batch gives one tile "
                                                 "per frame."),
                *[io.Image.Input(f"images_{i}", optional=True,
                                 tooltip=f"More tiles (input {i}), after those of the inputs above it.")
                  for i in range(2, MORE + 2)],
                io.String.Input("labels", default="input\nedit", multiline=True, dynamic_prompts=False,
                                tooltip="One label per tile, one per line, in tile order (e.g. 'input', 'eta {eta}'). "
                                        "'{eta}' is replaced by the eta wired to the eta input beside that tile's "
                                        "images input (eta_2 for images_2, ...), e.g. from Imagic Interpolate "
                                        "Conditioning's eta output: the label then follows the eta widget. Empty: "
                                        "no labels. Latin letters only (Pillow's built-in font; no font "
                                        "of wide coverage is shipped): other scripts and emoji show as empty boxes."),
                io.Int.Input("columns", default=0, min=0, max=64,
                             tooltip="Tiles per row; 0 = all in one row."),
                *[io.Float.Input(f"eta{suffix}", optional=True, force_input=True,
                                 tooltip=f"The eta of the tile(s) of images{suffix or ''}, for '{{eta}}' in their "
                                         "label (e.g. Imagic Interpolate Conditioning's or Imagic Auto Eta's eta "
                                         "output).")
                  for suffix in SUFFIXES],
            ],
            outputs=[io.Image.Output(display_name="grid", tooltip="The labelled grid as one image, for Save Image or "
                                                                  "Preview Image.")],
        )

    @classmethod
    def execute(cls, images, labels: str, columns: int, **more) -> io.NodeOutput:
        tiles, sources = [], []
        for suffix in SUFFIXES:
            batch = images if not suffix else more.get(f"images{suffix}")
            if batch is not None:
                frames = tensor_to_pils(batch)
                tiles += frames
                sources += [suffix] * len(frames)
        names = split_labels(labels)
        if not names:
            names = [""] * len(tiles)
        if len(names) != len(tiles):
            raise fail(NODE_ID, f"{len(tiles)} tiles but {len(names)} label lines",
                       f"write one label per line for each of the {len(tiles)} tiles (a batch of N frames is N "
                       "tiles), or clear the labels")
        names = fill_labels(NODE_ID, names, sources, more)
        bar = comfy.utils.ProgressBar(len(tiles))

        def on_tile(done: int, total: int) -> None:
            comfy.model_management.throw_exception_if_processing_interrupted()  # Cancel, between tiles
            bar.update_absolute(done, total)

        return io.NodeOutput(pil_to_tensor(labelled_grid(tiles, names, columns, on_tile=on_tile)))
