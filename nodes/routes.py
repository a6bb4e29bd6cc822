"""The pack's one HTTP route: ``GET /imagic/defaults``, the node defaults (core/defaults.py) as JSON for the graph
editor's scripts (js/imagic_learning_rate.js), so the js holds no copy of them."""
from __future__ import annotations

from ..core import defaults

PATH = "/imagic/defaults"


def register() -> bool:
    """Add the route to ComfyUI's server, once; False where no server runs (headless use, the tests' executor)."""
    try:
        from aiohttp import web

        from server import PromptServer
    except ImportError:
        return False
    server = getattr(PromptServer, "instance", None)
    if server is None:
        return False
    if any(getattr(r, "path", None) == PATH for r in server.routes):
        return True

    @server.routes.get(PATH)
    async def imagic_defaults(request):
        return web.json_response(defaults.as_data())

    return True
