"""Imagic Labelled Grid: several pictures as one, each under its label (input | edit, one tile per eta)."""
from __future__ import annotations

import comfy.model_management
import comfy.utils
from comfy_api.latest import io

from ..core.grid import labelled_grid, pil_to_tensor, tensor_to_pils
from .errors import fail

NODE_ID = "ImagicLabelledGrid"
MORE = 7  # optional image inputs after the first: 8 in all


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
                "are one line per tile. Tiles of different sizes are centred in cells of the largest size."),
            inputs=[
                io.Image.Input("images", tooltip="The first tile(s), e.g. the input photo. A batch gives one tile "
                                                 "per frame."),
                *[io.Image.Input(f"images_{i}", optional=True,
                                 tooltip=f"More tiles (input {i}), after those of the inputs above it.")
                  for i in range(2, MORE + 2)],
                io.String.Input("labels", default="input\nedit", multiline=True, dynamic_prompts=False,
                                tooltip="One label per tile, one per line, in tile order (e.g. 'input', 'eta 0.7'). "
                                        "Empty: no labels."),
                io.Int.Input("columns", default=0, min=0, max=64,
                             tooltip="Tiles per row; 0 = all in one row."),
            ],
            outputs=[io.Image.Output(display_name="grid", tooltip="The labelled grid as one image, for Save Image or "
                                                                  "Preview Image.")],
        )

    @classmethod
    def execute(cls, images, labels: str, columns: int, **more) -> io.NodeOutput:
        tiles = tensor_to_pils(images)
        for i in range(2, MORE + 2):
            extra = more.get(f"images_{i}")
            if extra is not None:
                tiles += tensor_to_pils(extra)
        names = split_labels(labels)
        if not names:
            names = [""] * len(tiles)
        if len(names) != len(tiles):
            raise fail(NODE_ID, f"{len(tiles)} tiles but {len(names)} label lines",
                       f"write one label per line for each of the {len(tiles)} tiles (a batch of N frames is N "
                       "tiles), or clear the labels")
        bar = comfy.utils.ProgressBar(len(tiles))

        def on_tile(done: int, total: int) -> None:
            comfy.model_management.throw_exception_if_processing_interrupted()  # Cancel, between tiles
            bar.update_absolute(done, total)

        return io.NodeOutput(pil_to_tensor(labelled_grid(tiles, names, columns, on_tile=on_tile)))
