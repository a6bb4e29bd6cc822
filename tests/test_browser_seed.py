"""A training node added fresh from the node library (not loaded from a workflow) starts with its seed's
control after generate at "fixed" (js/imagic_seed_fixed.js): a second Run of an unchanged graph takes A and B
from ComfyUI's cache instead of drawing a new seed and training again. Real frontend, headless Chromium."""
from __future__ import annotations

import pytest

from browser import missing_reason
from conftest import HOST, NO_HOST
from test_browser import TINY_RUN_JS
from test_browser_ux import close_dialogs, queue_from_the_frontend
from workflow_env import TEST_IMAGE, load

pytestmark = [pytest.mark.skipif(HOST is None, reason=NO_HOST),
              pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason()))]
TRAINING = ["ImagicOptimizeEmbedding", "ImagicFinetuneUNet"]

FRESH_CONTROLS_JS = """(types) => Object.fromEntries(types.map(t => {
  const node = LiteGraph.createNode(t);
  return [t, node.widgets.filter(w => w.name === "control_after_generate").map(w => w.value)];
}))"""

# Each training node of the loaded graph replaced by one made as the node library makes it (LiteGraph.createNode),
# wired the same way, with the same input values (its control widget left as the fresh node has it).
REPLACE_WITH_FRESH_JS = """(types) => {
  const g = app.graph;
  const link = id => g.links.get ? g.links.get(id) : g.links[id];
  const ids = {};
  for (const old of g.nodes.filter(n => types.includes(n.type))) {
    const fresh = LiteGraph.createNode(old.type);
    fresh.pos = [...old.pos];
    g.add(fresh);
    for (const w of fresh.widgets) {
      const mine = old.widgets.find(o => o.name === w.name);
      if (mine && w.name !== "control_after_generate") w.value = mine.value;
    }
    old.inputs.forEach((input, slot) => {
      if (input.link == null) return;
      const l = link(input.link);
      g.getNodeById(l.origin_id).connect(l.origin_slot, fresh, slot);
    });
    old.outputs.forEach((output, slot) => {
      for (const id of [...(output.links ?? [])]) {
        const l = link(id);
        fresh.connect(slot, g.getNodeById(l.target_id), l.target_slot);
      }
    });
    g.remove(old);
    ids[fresh.type] = fresh.id;
  }
  return ids;
}"""

STATE_JS = """(ids) => Object.fromEntries(Object.entries(ids).map(([t, id]) => {
  const n = app.graph.getNodeById(id);
  return [t, {seed: n.widgets.find(w => w.name === "seed").value,
              control: n.widgets.find(w => w.name === "control_after_generate")?.value}];
}))"""


def test_a_fresh_training_node_starts_with_a_fixed_seed(frontend):
    close_dialogs(frontend)
    assert frontend.evaluate(FRESH_CONTROLS_JS, TRAINING) == {t: ["fixed"] for t in TRAINING}
    # Sampler seeds keep the frontend's randomize: only training is slow to repeat.
    assert frontend.evaluate(FRESH_CONTROLS_JS, ["KSampler"]) == {"KSampler": ["randomize"]}


def test_fresh_training_nodes_do_not_train_again_on_a_second_run(frontend, workflow_server):
    close_dialogs(frontend)
    assert frontend.load(load("imagic_edit"))["missing"] == []
    frontend.evaluate(TINY_RUN_JS, {"image": TEST_IMAGE, "steps": 2})
    # The edit's sampler keeps its stored "fixed"; only the training nodes are fresh.
    ids = frontend.evaluate(REPLACE_WITH_FRESH_JS, TRAINING)
    assert sorted(ids) == sorted(TRAINING)
    before = frontend.evaluate(STATE_JS, ids)
    assert all(s["control"] == "fixed" for s in before.values()), before
    queue_from_the_frontend(frontend, workflow_server)
    assert frontend.evaluate(STATE_JS, ids) == before  # no seed re-rolled after the Run
    second = queue_from_the_frontend(frontend, workflow_server)
    cached = {n for m in second["status"]["messages"] if m[0] == "execution_cached" for n in m[1]["nodes"]}
    assert {str(i) for i in ids.values()} <= cached, cached
    assert frontend.errors == []
