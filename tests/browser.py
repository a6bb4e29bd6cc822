"""The real ComfyUI frontend in headless Chromium (Debian's /usr/bin/chromium, never a Playwright download),
driven by Playwright, against a real server (tests/server.py)."""
from __future__ import annotations

import importlib.util
import json
import os
import time
import urllib.parse
import urllib.request
from pathlib import Path

CHROMIUM = os.environ.get("IMAGIC_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# No first-run template dialog, full drawing at any zoom (for screenshots), no minimap over the graph.
SETTINGS = {"Comfy.TutorialCompleted": True, "LiteGraph.Canvas.MinFontSizeForLOD": 0, "Comfy.Minimap.Visible": False}
VIEWPORT = {"width": 2400, "height": 1400}
SKIP_MARK = "BROWSER TESTS SKIPPED"

READY_JS = """() => !!(window.app && app.graph && app.extensionManager && app.canvas
    && app.extensions.some(e => e.name === "imagic.LossChart"))"""

LOAD_JS = """async (workflow) => {
  const registered = LiteGraph.registered_node_types;
  const missing = [...new Set(workflow.nodes.map(n => n.type).filter(t => !(t in registered)))];
  await app.loadGraphData(workflow);
  await new Promise(r => setTimeout(r, 300));
  const visible = sel => [...document.querySelectorAll(sel)].filter(e => e.offsetParent !== null)
      .map(e => e.innerText.trim().slice(0, 300));
  return {missing, nodes: app.graph.nodes.length,
          broken: app.graph.nodes.filter(n => n.has_errors).map(n => `${n.id} ${n.type}`),
          dialogs: visible(".p-dialog"), toasts: visible(".p-toast-message")};
}"""

# Show the given nodes (or everything) clear of the side bar and top menus, as large as fits up to 100%;
# returns the CSS-pixel clip of that box.
VIEW_JS = """({ids, pad}) => {
  const g = app.graph, T = LiteGraph.NODE_TITLE_HEIGHT, left = 80, top = 110, right = 20, bottom = 70;
  const nodes = ids ? ids.map(id => g.getNodeById(id)) : g.nodes;
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  const grow = (x, y, w, h) => {
    x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x + w); y1 = Math.max(y1, y + h);
  };
  for (const n of nodes) grow(n.pos[0], n.pos[1] - T, n.size[0], n.size[1] + T);
  if (!ids) for (const gr of g.groups) grow(...gr._bounding);
  x0 -= pad; y0 -= pad; x1 += pad; y1 += pad;
  const el = app.canvas.canvas, rect = el.getBoundingClientRect();
  const scale = Math.min(1, (el.clientWidth - left - right) / (x1 - x0), (el.clientHeight - top - bottom) / (y1 - y0));
  app.canvas.ds.scale = scale;
  app.canvas.ds.offset = [-x0 + left / scale, -y0 + top / scale];
  app.canvas.setDirty(true, true);
  app.canvas.draw(true, true);
  return {x: rect.left + left, y: rect.top + top, width: (x1 - x0) * scale, height: (y1 - y0) * scale};
}"""


def missing_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if importlib.util.find_spec("playwright") is None:
        return f"{SKIP_MARK}: the Python package 'playwright' is not installed (.ci/run installs it)"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"{SKIP_MARK}: no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)"
    return None


def store_settings(server_url: str, settings: dict) -> None:
    for key, value in settings.items():
        request = urllib.request.Request(f"{server_url}/api/settings/{urllib.parse.quote(key)}",
                                         data=json.dumps(value).encode(), method="POST")
        urllib.request.urlopen(request, timeout=30).read()


class Frontend:
    """One Chromium with a fresh profile, one page on the server's frontend, its errors recorded.

    Errors are attributed to what caused them: every request is stamped with the phase it was issued in (0 =
    the app starting up, then one phase per ``load``), so a failed response that belongs to the frontend's own
    start-up traffic (e.g. the 404 of ``/api/userdata/comfy.templates.json`` on a fresh base directory) lands
    in ``startup_errors`` however late it arrives on a busy machine, never in a workflow's ``errors``; a late
    answer to an earlier load's request goes to ``late_errors``. ``open`` and ``load`` return only once the page
    has settled (no request in flight for a while).
    """

    def __init__(self, playwright, server, profile: Path):
        self.server = server
        self.host = urllib.parse.urlparse(server.url).netloc
        self.context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS, viewport=VIEWPORT)
        self.page = self.context.pages[0] if self.context.pages else self.context.new_page()
        self.errors: list[str] = []  # caused by the current phase (the latest load, or anything done since)
        self.startup_errors: list[str] = []  # caused by the app starting up
        self.late_errors: list[str] = []  # answers, arriving later, to requests an earlier load issued
        self.phase = 0
        self._issued: dict = {}  # request -> the phase it was issued in
        self._in_flight: set = set()
        self.page.on("console", self._on_console)
        # with the stack: it names the script that threw (ours or the frontend's)
        self.page.on("pageerror", lambda error: self._record(self.phase, f"page error: {error.stack or error}"))
        self.page.on("request", self._on_request)
        self.page.on("requestfinished", lambda request: self._in_flight.discard(request))
        self.page.on("requestfailed", self._on_request_failed)
        self.page.on("response", self._on_response)

    def _ours(self, url: str) -> bool:
        return urllib.parse.urlparse(url).netloc in ("", self.host)

    def _record(self, phase: int, text: str) -> None:
        if phase == 0:
            self.startup_errors.append(text)
        elif phase == self.phase:
            self.errors.append(text)
        else:
            self.late_errors.append(text)

    def _on_request(self, request) -> None:
        self._issued[request] = self.phase
        self._in_flight.add(request)

    def _on_request_failed(self, request) -> None:
        self._in_flight.discard(request)
        if self._ours(request.url):  # a fetch to the internet, which this machine does not reach, is not ours
            self._record(self._issued.get(request, self.phase), f"request failed: {request.failure} ({request.url})")

    def _on_response(self, response) -> None:
        if response.status >= 400 and self._ours(response.url):
            phase = self._issued.get(response.request, self.phase)
            self._record(phase, f"HTTP {response.status} {response.status_text} ({response.url})")

    def _on_console(self, message) -> None:
        if message.type != "error":
            return
        url = (message.location or {}).get("url", "")
        if url and not self._ours(url):
            return  # a fetch to the internet, which this machine does not reach
        if message.text.startswith("Failed to load resource"):
            return  # Chromium's echo of a failed request: recorded by _on_response/_on_request_failed, by phase
        self._record(self.phase, f"console error: {message.text} ({url})")

    def settle(self, quiet_s: float = 0.5, timeout_s: float = 120) -> None:
        """Wait until no request has been in flight for ``quiet_s`` (Playwright delivers the page's events
        while it waits, so every answer so far is recorded when this returns)."""
        deadline = time.monotonic() + timeout_s
        quiet_since = None
        while time.monotonic() < deadline:
            self.page.wait_for_timeout(100)
            if self._in_flight:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_s:
                return
        raise TimeoutError(f"the page did not settle: {sorted(r.url for r in self._in_flight)} still in flight")

    def open(self, timeout_s: float = 180) -> None:
        store_settings(self.server.url, SETTINGS)
        self.page.goto(self.server.url)
        self.page.wait_for_function(READY_JS, timeout=timeout_s * 1000)
        self.settle(quiet_s=1.0, timeout_s=timeout_s)

    def begin_phase(self) -> None:
        """From now on, new requests and errors belong to a new phase (``errors`` starts empty)."""
        self.phase += 1
        self.errors.clear()

    def load(self, workflow: dict) -> dict:
        """loadGraphData as a drop would; returns what went wrong (see LOAD_JS) plus the errors it caused."""
        self.begin_phase()
        report = self.page.evaluate(LOAD_JS, workflow)
        self.settle()
        report["errors"] = list(self.errors)
        return report

    def evaluate(self, script: str, arg=None):
        return self.page.evaluate(script, arg)

    def screenshot(self, path: Path, node_ids=None, pad: int = 30) -> Path:
        clip = self.page.evaluate(VIEW_JS, {"ids": node_ids, "pad": pad})
        time.sleep(0.3)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), clip=clip)
        return path

    def close(self) -> None:
        self.context.close()


def publish(screenshot: Path, docs_dir: Path, width: int = 1600) -> Path | None:
    """A small copy of ``screenshot`` for the README (docs/screenshots/), only when
    IMAGIC_PUBLISH_SCREENSHOTS=1: a plain test run leaves the checkout clean."""
    from PIL import Image

    if os.environ.get("IMAGIC_PUBLISH_SCREENSHOTS") != "1":
        return None
    docs_dir.mkdir(parents=True, exist_ok=True)
    target = docs_dir / screenshot.name
    with Image.open(screenshot) as image:
        if image.width > width:
            image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
        image.convert("RGB").quantize(colors=256).save(target, optimize=True)
    return target
