"""A new user's first minutes in the real frontend (headless Chromium, tests/browser.py): the template browser
lists the pack's workflows in the order a user wants them, each with one line saying what it is; the loader
has no seed that re-rolls; imagic_edit saves input | edit and the eta grid labels its tiles; a second Run of
an unchanged graph executes no node. Screenshots go to docs/screenshots/ (IMAGIC_PUBLISH_SCREENSHOTS=1)."""
from __future__ import annotations

import json
import time

import pytest
from PIL import Image

from browser import missing_reason, publish
from conftest import HOST, NO_HOST
from pack import ROOT, sub
from test_browser import DOCS_SCREENSHOTS, TINY_RUN_JS, wait_idle
from workflow_env import TEST_IMAGE, load

pytestmark = [pytest.mark.skipif(HOST is None, reason=NO_HOST),
              pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason()))]
PACK = "comfyui-imagic"  # the folder name the test server gives the pack (tests/live_server.py)
INDEX = json.loads((ROOT / "js" / "templates.json").read_text(encoding="utf-8"))
GRID = sub("core.grid")

OPEN_TEMPLATES_JS = """async () => { await app.extensionManager.command.execute("Comfy.BrowseTemplates"); }"""
CARDS_JS = """() => [...document.querySelectorAll('[data-testid^="template-workflow-"]')]
  .filter(card => card.offsetParent !== null)
  .map(card => ({name: card.dataset.testid.slice("template-workflow-".length),
                 description: card.querySelector(".imagic-template-description")?.textContent ?? null}))"""
DIALOGS_JS = """() => [...document.querySelectorAll('.p-dialog')].filter(e => e.offsetParent !== null).length"""


def expected_order(served: list[str]) -> list[str]:
    listed = [t["name"] for t in INDEX if t["name"] in served]
    return listed + [name for name in served if name not in listed]


def test_template_browser_lists_ours_in_order_with_one_line_each(frontend, workflow_server, tmp_path):
    served = workflow_server.get("/api/workflow_templates")[PACK]
    assert sorted(served) == sorted(p.stem for p in (ROOT / "workflows").glob("*.json"))
    described = {t["name"]: t["description"] for t in INDEX}
    assert not [name for name in served if name not in described], "a template without its line in templates.json"

    frontend.evaluate(OPEN_TEMPLATES_JS)
    frontend.page.get_by_text(PACK, exact=True).first.click()
    deadline = time.time() + 60
    while time.time() < deadline:
        cards = frontend.evaluate(CARDS_JS)
        if len(cards) == len(served) and all(c["description"] for c in cards):
            break
        time.sleep(0.3)
    assert [c["name"] for c in cards] == expected_order(served)
    assert all(c["description"] == described[c["name"]] for c in cards), cards
    if "imagic_demo_shapes" in served:
        assert cards[0]["name"] == "imagic_demo_shapes"
    else:
        assert cards[0]["name"] == "imagic_edit"  # until the demo template exists
    shot = tmp_path / "template_browser.png"
    frontend.page.screenshot(path=str(shot))
    publish(shot, DOCS_SCREENSHOTS, width=1400)
    close_dialogs(frontend)


def close_dialogs(frontend) -> None:
    deadline = time.time() + 30
    while frontend.evaluate(DIALOGS_JS) and time.time() < deadline:
        frontend.page.keyboard.press("Escape")
        time.sleep(0.3)
    assert frontend.evaluate(DIALOGS_JS) == 0, "a dialog stays open over the canvas"


def test_the_tiny_checkpoint_seed_has_no_control_after_generate(frontend):
    close_dialogs(frontend)
    frontend.load(load("imagic_edit"))
    names = frontend.evaluate("""() => LiteGraph.createNode("ImagicTinyCheckpoint").widgets.map(w => w.name)""")
    assert names == ["family", "seed"]


CHART_STATE_JS = """(ids) => Object.fromEntries(Object.entries(ids).map(([type, id]) => {
  const s = app.graph.getNodeById(id)?.imagicLoss;
  return [type, s ? {step: s.step, steps: s.steps, points: s.points.length, cached: !!s.cached} : null];
}))"""

# After TINY_RUN_JS: 128 px pictures, so the saved grids show legible labels in the screenshots.
SIZE_JS = """(size) => {
  for (const n of app.graph.nodes.filter(n => ["ImageScale", "EmptyLatentImage"].includes(n.type)))
    for (const name of ["width", "height"]) n.widgets.find(w => w.name === name).value = size;
}"""
SIZE = 128


def new_history(server, before: set[str]) -> dict:
    history = server.get("/history")
    (prompt_id,) = set(history) - before
    return history[prompt_id]


def queue_from_the_frontend(frontend, server, timeout_s: float = 300) -> dict:
    """Press Run (app.queuePrompt) and wait for the run's /history entry."""
    wait_idle(server)
    before = set(server.get("/history"))
    frontend.evaluate("() => app.queuePrompt(0, 1)")
    time.sleep(0.5)
    wait_idle(server, timeout_s)
    entry = new_history(server, before)
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert entry["status"]["status_str"] == "success", errors[:1]
    return entry


def saved(server, entry: dict, node_id) -> Image.Image:
    (image,) = entry["outputs"][str(node_id)]["images"]
    return Image.open(server.base / "output" / image["subfolder"] / image["filename"])


def node_ids(frontend, node_type: str) -> list[int]:
    return frontend.evaluate("(t) => app.graph.nodes.filter(n => n.type === t).map(n => n.id)", node_type)


def grid_saver(frontend) -> int:
    return frontend.evaluate("""() => app.graph.nodes.find(n => n.type === "SaveImage"
        && n.getInputNode(0)?.type === "ImagicLabelledGrid").id""")


def test_imagic_edit_saves_input_and_edit_and_a_second_run_executes_nothing(frontend, workflow_server, tmp_path):
    assert frontend.load(load("imagic_edit"))["missing"] == []
    frontend.evaluate(TINY_RUN_JS, {"image": TEST_IMAGE, "steps": 4})
    frontend.evaluate(SIZE_JS, SIZE)
    first = queue_from_the_frontend(frontend, workflow_server)
    pair = saved(workflow_server, first, grid_saver(frontend))
    strip = round(GRID.font_size(SIZE) * 1.6)
    assert pair.size == (2 * SIZE + GRID.GAP, strip + SIZE)
    time.sleep(1.0)  # the saved pictures show on their nodes
    close_dialogs(frontend)
    shot = tmp_path / "imagic_edit_before_after.png"
    frontend.screenshot(shot, node_ids=[grid_saver(frontend), *node_ids(frontend, "ImagicLabelledGrid")])
    publish(shot, DOCS_SCREENSHOTS, width=900)

    # Open the same workflow afresh (as in a new tab: new nodes, no chart state) and Run: nothing changed, so
    # every node comes from ComfyUI's cache (no seed re-rolled: the tiny checkpoint's, the training and sampler
    # seeds stay as they are); A and B do not train again, and their charts show the cached curve.
    assert frontend.load(load("imagic_edit"))["missing"] == []
    ids = frontend.evaluate(TINY_RUN_JS, {"image": TEST_IMAGE, "steps": 4})
    frontend.evaluate(SIZE_JS, SIZE)
    assert frontend.evaluate(CHART_STATE_JS, ids) == {t: None for t in ids}
    second = queue_from_the_frontend(frontend, workflow_server)
    prompt = second["prompt"][2]
    cached = [m[1]["nodes"] for m in second["status"]["messages"] if m[0] == "execution_cached"]
    assert cached and sorted(cached[0]) == sorted(prompt), (cached, sorted(prompt))
    assert first["prompt"][2] == prompt
    time.sleep(1.0)
    charts = frontend.evaluate(CHART_STATE_JS, ids)
    assert all(c["cached"] and c["step"] == c["steps"] == c["points"] == 4 for c in charts.values()), charts
    close_dialogs(frontend)
    shot = tmp_path / "loss_chart_cached.png"
    frontend.screenshot(shot, node_ids=list(ids.values()))
    publish(shot, DOCS_SCREENSHOTS, width=900)


def test_eta_grid_shows_each_eta_on_its_tile(frontend, workflow_server, tmp_path):
    assert frontend.load(load("imagic_eta_grid"))["missing"] == []
    frontend.evaluate(TINY_RUN_JS, {"image": TEST_IMAGE, "steps": 3})
    frontend.evaluate(SIZE_JS, SIZE)
    entry = queue_from_the_frontend(frontend, workflow_server)
    grid = saved(workflow_server, entry, grid_saver(frontend))
    strip = round(GRID.font_size(SIZE) * 1.6)
    assert grid.size == (4 * SIZE + 3 * GRID.GAP, 2 * (strip + SIZE) + GRID.GAP)
    time.sleep(1.0)
    close_dialogs(frontend)
    shot = tmp_path / "imagic_eta_grid_labelled.png"
    frontend.screenshot(shot, node_ids=[grid_saver(frontend)])
    publish(shot, DOCS_SCREENSHOTS, width=900)


# Every node's box as drawn (title bar and the pack badge above it included) and every group's box.
LAYOUT_JS = """() => {
  const T = LiteGraph.NODE_TITLE_HEIGHT, BADGE = 22;
  app.canvas.draw(true, true);
  const nodes = app.graph.nodes.map(n => ({id: n.id, type: n.type, title: n.title,
    box: [n.pos[0], n.pos[1] - T - BADGE, n.pos[0] + n.size[0], n.pos[1] + n.size[1]]}));
  const groups = app.graph.groups.map(g => ({title: g.title, box: [g._bounding[0], g._bounding[1],
    g._bounding[0] + g._bounding[2], g._bounding[1] + g._bounding[3]]}));
  return {nodes, groups};
}"""


def overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "workflows").glob("*.json")))
def test_no_node_covers_another_or_leaves_its_group(frontend, name):
    """As the frontend lays the workflow out (the loss chart makes the training nodes taller than in the file):
    no node's badge or title covers another node, and a node that starts in a group ends in it."""
    close_dialogs(frontend)
    assert frontend.load(load(name))["missing"] == []
    layout = frontend.evaluate(LAYOUT_JS)
    nodes = layout["nodes"]
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            assert not overlap(a["box"], b["box"]), f"{a['title'] or a['type']} and {b['title'] or b['type']} overlap"
    groups = layout["groups"]
    for i, a in enumerate(groups):
        assert not any(overlap(a["box"], b["box"]) for b in groups[i + 1:]), f"group {a['title']!r} overlaps another"
    for node in nodes:
        x, y = node["box"][0], node["box"][1] + 22  # the title's top left
        for group in layout["groups"]:
            g = group["box"]
            if g[0] <= x < g[2] and g[1] <= y < g[3]:
                assert node["box"][2] <= g[2] and node["box"][3] <= g[3], \
                    f"{node['title'] or node['type']} sticks out of group {group['title']!r}: {node['box']} vs {g}"


LEARNING_RATE_JS = """() => {
  const node = LiteGraph.createNode("ImagicFinetuneUNet");
  app.graph.add(node);
  const w = name => node.widgets.find(x => x.name === name);
  const pick = value => { const m = w("method"); m.value = value; m.callback?.(value, app.canvas, node); };
  const seen = [w("learning_rate").value];
  pick("full"); seen.push(w("learning_rate").value);
  pick("lora"); seen.push(w("learning_rate").value);
  w("learning_rate").value = 0.003; pick("full"); seen.push(w("learning_rate").value);
  app.graph.remove(node);
  return seen;
}"""


def test_learning_rate_shows_its_default_and_follows_the_method(frontend, workflow_server):
    """No 0.0000000 on a fresh node: lora's default; full switches to the paper's 5e-7; a typed rate stays. The js
    reads the rates from the server (GET /imagic/defaults, core/defaults.py), as does the node's own default."""
    close_dialogs(frontend)
    spec = workflow_server.get("/object_info")["ImagicFinetuneUNet"]["input"]["required"]["learning_rate"][1]
    served = workflow_server.get("/imagic/defaults")
    d = sub("core.defaults")
    assert served == d.as_data()
    lora, full = served["learning_rate"]["lora"], served["learning_rate"]["full"]
    assert spec["default"] == lora == d.LEARNING_RATE["lora"] > 0 and full == d.PAPER["tune_learning_rate"]
    seen = frontend.evaluate(LEARNING_RATE_JS)
    assert seen == pytest.approx([lora, full, lora, 0.003], rel=1e-9)


DEMO = ROOT / "workflows" / "imagic_demo_shapes.json"
DEMO_WEIGHTS = ROOT / "assets" / "imagic_shapes.safetensors"


@pytest.mark.skipif(not DEMO.is_file() or not DEMO_WEIGHTS.is_file(),
                    reason="the shapes demo (workflows/imagic_demo_shapes.json, assets/imagic_shapes.safetensors) "
                           "is not in this checkout")
def test_demo_template_before_and_after_a_run_as_shipped(frontend, workflow_server, tmp_path):
    """The first template a user sees, run exactly as shipped (no download, nothing rewired): before the run,
    after it with its labelled input | edit picture."""
    close_dialogs(frontend)
    report = frontend.load(load("imagic_demo_shapes"))
    assert report["missing"] == [] and report["dialogs"] == [] and report["errors"] == []
    before = tmp_path / "imagic_demo_shapes_before.png"
    frontend.screenshot(before)
    publish(before, DOCS_SCREENSHOTS)
    entry = queue_from_the_frontend(frontend, workflow_server, timeout_s=900)
    picture = saved(workflow_server, entry, grid_saver(frontend))
    labels = frontend.evaluate("""() => app.graph.nodes.find(n => n.type === "ImagicLabelledGrid")
        .widgets.find(w => w.name === "labels").value""")
    tiles = len(labels.strip().splitlines())
    assert picture.width > tiles * 64 and picture.height > 64
    time.sleep(1.0)
    close_dialogs(frontend)
    after = tmp_path / "imagic_demo_shapes_after.png"
    frontend.screenshot(after)
    publish(after, DOCS_SCREENSHOTS)
    pair = tmp_path / "imagic_demo_shapes_input_edit.png"
    frontend.screenshot(pair, node_ids=[grid_saver(frontend)])
    publish(pair, DOCS_SCREENSHOTS, width=900)


# On screen as the template opens (the view stored in the workflow): the saved pictures' node boxes and the
# minimap's, in page pixels.
SCREEN_JS = """async () => {
  const c = app.canvas, ds = c.ds, r = c.canvas.getBoundingClientRect(), T = LiteGraph.NODE_TITLE_HEIGHT;
  for (let i = 0; i < 50 && !document.querySelector(".minimap-main-container"); i++)
    await new Promise(done => setTimeout(done, 100));
  const m = document.querySelector(".minimap-main-container")?.getBoundingClientRect();
  const screen = ([x, y]) => [(x + ds.offset[0]) * ds.scale + r.left, (y + ds.offset[1]) * ds.scale + r.top];
  const active = app.graph.nodes.filter(n => n.type === "SaveImage" && n.mode === 0);
  const savers = active.map(n => ({title: n.title || n.type,
    box: [...screen([n.pos[0], n.pos[1] - T]), ...screen([n.pos[0] + n.size[0], n.pos[1] + n.size[1]])]}));
  return {savers, minimap: m ? [m.left, m.top, m.right, m.bottom] : null, view: [innerWidth, innerHeight]};
}"""
SCREEN = {"width": 1920, "height": 970}  # a full HD screen less the browser's bars
ON_SCREEN = ("imagic_demo_shapes", "imagic_edit", "imagic_edit_masked", "imagic_edit_sdxl", "imagic_edit_sd3",
             "imagic_edit_flux", "imagic_reuse_finetune", "imagic_eta_grid", "baseline_sdedit",
             "baseline_instructpix2pix")


@pytest.mark.parametrize("name", ON_SCREEN)
def test_saved_pictures_open_on_screen_clear_of_the_minimap(frontend, name):
    """A template as it opens on a full HD screen, with the frontend's minimap on (its default): every picture
    it saves (the muted optional ones aside) is inside the window and not under the minimap in the
    bottom-right corner (issue 24: the demo's input | edit opened there, off-screen under the minimap)."""
    close_dialogs(frontend)
    page = frontend.page
    before = page.viewport_size
    page.set_viewport_size(SCREEN)
    frontend.evaluate("""() => app.extensionManager.setting.set("Comfy.Minimap.Visible", true)""")
    try:
        assert frontend.load(load(name))["missing"] == []
        shown = frontend.evaluate(SCREEN_JS)
    finally:
        frontend.evaluate("""() => app.extensionManager.setting.set("Comfy.Minimap.Visible", false)""")
        page.set_viewport_size(before)
    assert shown["minimap"] and shown["savers"], shown
    width, height = shown["view"]
    for saver in shown["savers"]:
        box = saver["box"]
        assert 0 <= box[0] and 0 <= box[1] and box[2] <= width and box[3] <= height, (saver, shown["view"])
        assert not overlap(box, shown["minimap"]), (saver, shown["minimap"])
