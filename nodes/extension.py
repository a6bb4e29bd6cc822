"""The ComfyExtension that lists every Imagic node."""
from comfy_api.latest import ComfyExtension, io

from ..demo.shapes_checkpoint import ImagicShapesCheckpoint
from ..demo.shapes_scene import ImagicShapesScene
from ..demo.tiny_checkpoint import ImagicTinyCheckpoint
from .auto_eta import ImagicAutoEta
from .centred_noise import ImagicCentredNoise
from .finetune_unet import ImagicFinetuneUNet
from .interpolate_conditioning import ImagicInterpolateConditioning
from .labelled_grid import ImagicLabelledGrid
from .load_finetune import ImagicLoadFinetune
from .optimize_embedding import ImagicOptimizeEmbedding
from .routes import register
from .save_finetune import ImagicSaveFinetune
from .widget_values import guarded


class ImagicExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        register()  # ComfyUI 0.3.64 calls get_node_list, not on_load, while loading the pack
        nodes = [ImagicOptimizeEmbedding, ImagicFinetuneUNet, ImagicInterpolateConditioning, ImagicSaveFinetune,
                 ImagicLoadFinetune, ImagicTinyCheckpoint, ImagicLabelledGrid, ImagicAutoEta,
                 ImagicShapesCheckpoint, ImagicShapesScene, ImagicCentredNoise]
        return [guarded(node) for node in nodes]  # combo values and floats checked before each runs
