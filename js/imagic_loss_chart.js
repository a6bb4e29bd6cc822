// Live loss chart on the Imagic training nodes.
//
// The nodes send "imagic.loss" {node, title, step, steps, loss, eta_s} after every training step (see
// nodes/progress.py). Each message is added to the node's chart; the chart stays on the node after the
// run, until the node trains again. The state is kept on the node as `node.imagicLoss`
// ({title, step, steps, loss, eta_s, elapsed_s, points, stopped, converged_at, cached}) and is never saved in the
// workflow. With early stopping on, training may end before `steps`: the ui output's `stopped_at` says where, and
// the chart marks it ("converged, stopped at step N of M" and a line at that step).
// A node ComfyUI takes from its cache (Run again, a workflow opened in a new tab) shows the curve it trained
// with, marked "cached": its ui output, kept by ComfyUI with the cached result, read from the run's history.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { CHART_HEIGHT, drawChart } from "./loss_chart_canvas.js";

const TRAINING_NODES = new Set(["ImagicOptimizeEmbedding", "ImagicFinetuneUNet"]);
const WIDGET_NAME = "imagic_loss_chart";
const UI_KEY = "imagic_loss"; // nodes/progress.py LOSS_UI

function colors() {
  const lg = globalThis.LiteGraph ?? {};
  return {
    background: lg.WIDGET_BGCOLOR ?? "#222",
    outline: lg.WIDGET_OUTLINE_COLOR ?? "#666",
    text: lg.WIDGET_TEXT_COLOR ?? "#ddd",
    secondary: lg.WIDGET_SECONDARY_TEXT_COLOR ?? "#999",
    raw: "rgba(120, 170, 255, 0.35)",
    line: "#7fb2ff",
  };
}

function chartWidget(node) {
  return {
    name: WIDGET_NAME,
    type: WIDGET_NAME,
    value: "",
    serialize: false, // not part of widgets_values
    options: { serialize: false }, // not part of the API prompt
    computeSize: (width) => [width, CHART_HEIGHT],
    draw(ctx, _node, width, y) {
      drawChart(ctx, width, y, node.imagicLoss ?? null, colors());
    },
  };
}

/** The node a message is about: "12", or "5:12" for a node inside subgraph node 5. */
function findNode(locator) {
  if (locator == null) return null;
  let graph = app.rootGraph ?? app.graph;
  let node = null;
  for (const part of String(locator).split(":")) {
    node = graph?.getNodeById?.(Number(part)) ?? graph?.getNodeById?.(part) ?? null;
    if (!node) return null;
    graph = node.subgraph;
  }
  return node;
}

let redrawQueued = false;
function redraw() {
  if (redrawQueued) return;
  redrawQueued = true;
  requestAnimationFrame(() => {
    redrawQueued = false;
    app.graph?.setDirtyCanvas(true, false);
  });
}

function onLoss({ detail }) {
  const node = findNode(detail?.node);
  if (!node || !TRAINING_NODES.has(node.comfyClass ?? node.type)) return;
  let state = node.imagicLoss;
  const now = performance.now();
  if (!state || state.stopped || detail.step <= state.step || detail.steps !== state.steps) {
    state = node.imagicLoss = { title: detail.title, steps: detail.steps, points: [], started: now, stopped: false };
  }
  state.step = detail.step;
  state.loss = detail.loss;
  state.eta_s = detail.eta_s;
  state.elapsed_s = (now - state.started) / 1000;
  state.points.push(detail.loss);
  redraw();
}

// prompt id -> the training nodes it took from the cache, until its history entry (with their ui outputs) is
// written: ComfyUI sends "executed" for cached output nodes only, not for cached training nodes.
const cachedRuns = new Map();

/** The node came from ComfyUI's cache: keep the curve this tab drew, else fetch the one it trained with. */
function onCached({ detail }) {
  const ids = [];
  for (const id of detail?.nodes ?? []) {
    const node = findNode(id);
    if (!node || !TRAINING_NODES.has(node.comfyClass ?? node.type)) continue;
    node.imagicLoss = { ...(node.imagicLoss ?? { points: [] }), cached: true, stopped: false };
    ids.push(id);
  }
  if (ids.length && detail.prompt_id) cachedRuns.set(detail.prompt_id, ids);
  redraw();
}

/** "executing" null: a prompt has ended and its history entry is written (ComfyUI's main.py). */
async function onExecuting({ detail }) {
  if (detail != null || !cachedRuns.size) return;
  const runs = [...cachedRuns];
  cachedRuns.clear();
  for (const [promptId, ids] of runs) {
    try {
      const response = await api.fetchApi(`/history/${encodeURIComponent(promptId)}`);
      const outputs = (await response.json())?.[promptId]?.outputs ?? {};
      for (const id of ids) {
        const node = findNode(id);
        if (node) fromOutput(node, outputs[id]);
      }
    } catch (error) {
      console.warn("Imagic loss chart: no cached curve", error);
    }
  }
}

/** The node's ui output ({imagic_loss: [{title, steps, losses, elapsed_s, stopped_at}]}), sent after it trains
 * and again every time it is cached (a new tab, Run again): the chart shows the curve it trained with. */
function fromOutput(node, output) {
  const run = output?.[UI_KEY]?.[0];
  const state = node.imagicLoss;
  if (!run) return;
  const done = run.losses.length;
  if (state && !state.cached && state.step === done && state.points.length === done) {
    state.converged_at = run.stopped_at ?? null; // the live curve is this run's: only mark where it stopped
    state.elapsed_s = run.elapsed_s;
    redraw();
    return;
  }
  node.imagicLoss = {
    title: run.title,
    steps: run.steps,
    step: run.losses.length,
    loss: run.losses[run.losses.length - 1],
    eta_s: 0,
    elapsed_s: run.elapsed_s,
    points: [...run.losses],
    stopped: false,
    converged_at: run.stopped_at ?? null,
    cached: !!state?.cached || !state,
  };
  redraw();
}

function onInterrupted() {
  for (const node of (app.rootGraph ?? app.graph)?.nodes ?? []) {
    const state = node.imagicLoss;
    if (state && state.step < state.steps && state.converged_at == null) state.stopped = true;
  }
  redraw();
}

app.registerExtension({
  name: "imagic.LossChart",
  async setup() {
    api.addEventListener("imagic.loss", onLoss);
    api.addEventListener("execution_interrupted", onInterrupted);
    api.addEventListener("execution_error", onInterrupted);
    api.addEventListener("execution_cached", onCached);
    api.addEventListener("executing", onExecuting);
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!TRAINING_NODES.has(nodeData.name)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      const result = onExecuted?.apply(this, arguments);
      fromOutput(this, output);
      return result;
    };
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      this.addCustomWidget(chartWidget(this));
      const [w, h] = this.computeSize();
      this.setSize([Math.max(this.size[0], w), Math.max(this.size[1], h)]);
      return result;
    };
  },
});
