// Imagic Auto Eta: a small bar chart of the text gain per eta on the node, the chosen eta highlighted.
//
// The node's UI output carries `imagic_auto_eta` = [{rule, chosen, eta, scores: [{eta, text_gain, distance}]}]
// (nodes/auto_eta.py); the chart is drawn from it after each run and never saved in the workflow.
import { app } from "../../scripts/app.js";

const NODE = "ImagicAutoEta";
const WIDGET_NAME = "imagic_auto_eta_chart";
const HEIGHT = 96;

function drawScores(ctx, width, y, report) {
  const lg = globalThis.LiteGraph ?? {};
  const pad = 10;
  const w = width - 2 * pad;
  ctx.save();
  ctx.fillStyle = lg.WIDGET_BGCOLOR ?? "#222";
  ctx.strokeStyle = lg.WIDGET_OUTLINE_COLOR ?? "#666";
  ctx.beginPath();
  if (ctx.roundRect) ctx.roundRect(pad, y + 2, w, HEIGHT - 4, 4);
  else ctx.rect(pad, y + 2, w, HEIGHT - 4);
  ctx.fill();
  ctx.stroke();
  ctx.font = "11px sans-serif";
  ctx.fillStyle = lg.WIDGET_SECONDARY_TEXT_COLOR ?? "#999";
  ctx.textAlign = "center";
  if (!report?.scores?.length) {
    ctx.fillText("text gain per eta: run the node", pad + w / 2, y + HEIGHT / 2);
    ctx.restore();
    return;
  }
  const scores = report.scores;
  const top = Math.max(...scores.map((s) => Math.abs(s.text_gain)), 1e-9);
  const zero = y + 14 + (HEIGHT - 34) / 2;
  const half = (HEIGHT - 34) / 2;
  const slot = w / scores.length;
  ctx.fillText(`text gain per eta (${report.rule}): eta ${report.eta.toFixed(2)}`, pad + w / 2, y + 13);
  scores.forEach((s, i) => {
    const x = pad + i * slot + slot * 0.2;
    const h = (Math.abs(s.text_gain) / top) * half;
    ctx.fillStyle = i === report.chosen ? "#7fd67f" : s.text_gain > 0 ? "#7fb2ff" : "#d67f7f";
    ctx.fillRect(x, s.text_gain > 0 ? zero - h : zero, slot * 0.6, Math.max(h, 1));
    ctx.fillStyle = lg.WIDGET_TEXT_COLOR ?? "#ddd";
    ctx.fillText(s.eta.toFixed(2), x + slot * 0.3, y + HEIGHT - 6);
  });
  ctx.strokeStyle = lg.WIDGET_SECONDARY_TEXT_COLOR ?? "#999";
  ctx.beginPath();
  ctx.moveTo(pad + 2, zero);
  ctx.lineTo(pad + w - 2, zero);
  ctx.stroke();
  ctx.restore();
}

app.registerExtension({
  name: "imagic.AutoEtaChart",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      const node = this;
      this.addCustomWidget({
        name: WIDGET_NAME,
        type: WIDGET_NAME,
        value: "",
        serialize: false,
        options: { serialize: false },
        computeSize: (width) => [width, HEIGHT],
        draw(ctx, _node, width, y) {
          drawScores(ctx, width, y, node.imagicAutoEta ?? null);
        },
      });
      return result;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const result = onExecuted?.apply(this, arguments);
      const report = message?.imagic_auto_eta?.[0];
      if (report) {
        this.imagicAutoEta = report;
        app.graph?.setDirtyCanvas(true, false);
      }
      return result;
    };
  },
});
