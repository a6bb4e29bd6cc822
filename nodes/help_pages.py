"""The help pages' one copy is js/docs/<NodeId>/en.md, which ComfyUI serves where the frontend looks first for
an English user (/extensions/<pack>/docs/<NodeId>/<locale>.md). For any other locale the frontend falls back
to /extensions/<pack>/docs/<NodeId>.md: this route answers it from the same file, so every user gets the page
and no 404 comes first for English."""
from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).absolute().parents[1] / "js" / "docs"  # not resolved: a linked pack keeps its folder name
PAGE = "en.md"


def page_for(node_id: str) -> Path | None:
    """The help page of ``node_id``, or None: only a folder of js/docs counts (no path tricks)."""
    pages = {p.parent.name: p for p in DOCS.glob(f"*/{PAGE}")}
    return pages.get(node_id)


def serve_locale_fallback() -> None:
    """Answer /extensions/<pack>/docs/<NodeId>.md from the page, on the running server (none headless)."""
    try:
        from aiohttp import web

        from server import PromptServer
    except ImportError:
        return
    server = getattr(PromptServer, "instance", None)
    if server is None:
        return
    pack = DOCS.parents[1].name  # the folder name, as ComfyUI names the pack's /extensions/<pack> and the frontend

    @server.routes.get(f"/extensions/{pack}/docs/{{node_id}}.md")
    async def help_page(request):
        page = page_for(request.match_info["node_id"])
        if page is None:
            raise web.HTTPNotFound()
        return web.FileResponse(page, headers={"Content-Type": "text/markdown; charset=utf-8"})
