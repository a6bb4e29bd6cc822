"""comfyui-imagic: Imagic (Kawar et al. 2022) text-based real image editing as ComfyUI nodes.

ComfyUI imports this folder as a custom node pack. Nothing heavy happens at import: the nodes are
built when ComfyUI calls ``comfy_entrypoint``, so the torch-only ``core`` package stays importable
without ComfyUI (the host-free tests rely on that).
"""

WEB_DIRECTORY = "./js"


async def comfy_entrypoint():
    from .nodes.extension import ImagicExtension
    from .nodes.help_pages import serve_locale_fallback

    serve_locale_fallback()
    return ImagicExtension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
