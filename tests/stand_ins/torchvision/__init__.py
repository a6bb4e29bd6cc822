"""Import-only stand-in for torchvision, used by the tests ONLY when the real package cannot be imported
(see ../README.md).

ComfyUI imports torchvision at module level in a few model files (Cascade, Cosmos) that the Imagic tests
never run. No CPU build of torchvision exists on the CI machine, so the tests put this folder on the path
to let `comfy.sd` import. Any real use fails loudly.
"""


def __getattr__(name):
    raise ImportError(f"torchvision stand-in: '{name}' is not available (tests only; install torchvision)")
