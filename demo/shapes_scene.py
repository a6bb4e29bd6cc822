"""ImagicShapesScene: a picture of the shapes world (demo/shapes_world.py) and its caption, with no file."""
from __future__ import annotations

import torch

from comfy_api.latest import io

from . import shapes_world as world


class ImagicShapesScene(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImagicShapesScene",
            display_name="Imagic Shapes Scene (demo)",
            category="Imagic/demo",
            description=(
                "Draws one scene of the shapes world the Imagic Shapes Checkpoint was trained on: a coloured "
                "square, circle or triangle on a grey background, 128x128, and its caption ('a red circle on "
                "the left'). The seed picks what the caption does not say: background shade, size and jitter."
            ),
            inputs=[
                io.Combo.Input("colour", options=list(world.COLOURS), default="red",
                               tooltip="Colour of the object."),
                io.Combo.Input("shape", options=list(world.SHAPES), default="circle",
                               tooltip="Shape of the object."),
                io.Combo.Input("position", options=list(world.POSITIONS), default="left",
                               tooltip="Where the object sits in the picture."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=False,
                             tooltip="Seed of the details the caption does not name: background shade, object "
                                     "size and a small shift of its place. The same seed gives the same picture."),
            ],
            outputs=[
                io.Image.Output(tooltip="The scene, 128x128 RGB."),
                io.String.Output(tooltip="Its caption, e.g. 'a red circle on the left' (the world's own wording)."),
            ],
        )

    @classmethod
    def execute(cls, colour: str, shape: str, position: str, seed: int) -> io.NodeOutput:
        scene = world.scene_for_seed(colour, shape, position, seed)
        image = torch.from_numpy(world.render(scene))[None]
        return io.NodeOutput(image, scene.caption)
