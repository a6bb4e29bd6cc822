"""Import-only stand-in for spandrel, used by the tests ONLY when the real package cannot be imported
(see ../README.md).

ComfyUI's upscale-model nodes import spandrel at module level; without it UpscaleModelLoader is not registered,
and the 1.27 frontend then fails to build every combo named ckpt_name/lora_name/vae_name (its model-to-node
table lists UpscaleModelLoader and reads its missing definition). A normal ComfyUI install has spandrel; this
machine must not install it. Any real use fails loudly.
"""


class _Unavailable:
    def __init__(self, *args, **kwargs):
        raise ImportError("spandrel stand-in: not available (tests only; install spandrel)")


class ModelLoader(_Unavailable):
    pass


class ImageModelDescriptor(_Unavailable):
    pass


def __getattr__(name):
    raise ImportError(f"spandrel stand-in: '{name}' is not available (tests only)")
