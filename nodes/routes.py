"""The pack's HTTP routes on ComfyUI's running server (none when headless), added once by ``register``:

* ``GET /imagic/defaults``: the node defaults (core/defaults.py) as JSON, for the graph editor's scripts
  (js/imagic_learning_rate.js), so the js holds no copy of them.
* ``GET /extensions/<pack>/docs/<NodeId>.md``: the help page. Its one copy is js/docs/<NodeId>/en.md, which
  ComfyUI serves where the frontend looks first for an English user (``.../docs/<NodeId>/<locale>.md``); for any
  other locale the frontend falls back to ``.../docs/<NodeId>.md``, answered here from the same file, so every
  user gets the page and no 404 comes first for English.
"""
from __future__ import annotations

from pathlib import Path

from ..core import defaults

DEFAULTS = "/imagic/defaults"
DOCS = Path(__file__).absolute().parents[1] / "js" / "docs"  # not resolved: a linked pack keeps its folder name
PAGE = "en.md"


def page_for(node_id: str) -> Path | None:
    """The help page of ``node_id``, or None: only a folder of js/docs counts (no path tricks)."""
    pages = {p.parent.name: p for p in DOCS.glob(f"*/{PAGE}")}
    return pages.get(node_id)


def register() -> bool:
    """Add the routes to ComfyUI's server, once; False where no server runs (headless use, the tests' executor)."""
    try:
        from aiohttp import web

        from server import PromptServer
    except ImportError:
        return False
    server = getattr(PromptServer, "instance", None)
    if server is None:
        return False
    if any(getattr(r, "path", None) == DEFAULTS for r in server.routes):
        return True
    pack = DOCS.parents[1].name  # the folder name, as ComfyUI names the pack's /extensions/<pack> and the frontend

    @server.routes.get(DEFAULTS)
    async def imagic_defaults(request):
        return web.json_response(defaults.as_data())

    @server.routes.get(f"/extensions/{pack}/docs/{{node_id}}.md")
    async def help_page(request):
        page = page_for(request.match_info["node_id"])
        if page is None:
            raise web.HTTPNotFound()
        return web.FileResponse(page, headers={"Content-Type": "text/markdown; charset=utf-8"})

    return True
