// Drawing of the Imagic loss chart on a LiteGraph canvas (no ComfyUI state here; see imagic_loss_chart.js).

export const CHART_HEIGHT = 150;
const MARGIN = 15;
const HEADER = 18;
const SMOOTHING = 0.9; // exponential moving average of the noisy per-step loss

export function formatSeconds(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

export function formatLoss(loss) {
  return Number.isFinite(loss) ? loss.toPrecision(4) : "–";
}

/** One line above the plot: what the run is doing now, or how it ended. */
export function statusLine(state) {
  if (!state) return "Loss chart: shows while this node trains";
  if (state.cached && !state.points?.length) return "cached: trained in an earlier run";
  const head = `step ${state.step}/${state.steps} · loss ${formatLoss(state.loss)}`;
  const converged = state.converged_at != null ? ` · converged, stopped at step ${state.converged_at} of ${state.steps}` : "";
  if (state.cached) return `${head}${converged} · cached (trained in ${formatSeconds(state.elapsed_s)})`;
  if (state.stopped) return `${head} · stopped`;
  if (converged) return `${head}${converged} in ${formatSeconds(state.elapsed_s)}`;
  if (state.step >= state.steps) return `${head} · done in ${formatSeconds(state.elapsed_s)}`;
  return `${head} · ETA ${formatSeconds(state.eta_s)}`;
}

function smoothed(points) {
  const out = new Array(points.length);
  let ema = points[0];
  for (let i = 0; i < points.length; i++) {
    ema = i === 0 ? points[0] : SMOOTHING * ema + (1 - SMOOTHING) * points[i];
    out[i] = ema;
  }
  return out;
}

function range(points) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const p of points) {
    if (Number.isFinite(p)) {
      lo = Math.min(lo, p);
      hi = Math.max(hi, p);
    }
  }
  if (!Number.isFinite(lo)) return [0, 1];
  if (hi - lo < 1e-12) return [lo - 0.5 * Math.abs(lo || 1), hi + 0.5 * Math.abs(hi || 1)];
  return [lo, hi];
}

function polyline(ctx, values, steps, box, lo, hi) {
  const { x, y, w, h } = box;
  // at most ~2 points per pixel: long runs stay cheap to draw
  const stride = Math.max(1, Math.floor(values.length / (2 * w)));
  ctx.beginPath();
  for (let i = 0; i < values.length; i += stride) {
    const px = x + (w * (i + 1)) / Math.max(steps, 1);
    const py = y + h - ((values[i] - lo) / (hi - lo)) * h;
    if (i === 0) ctx.moveTo(px, py);
    else ctx.lineTo(px, py);
  }
  ctx.stroke();
}

/** Draw ``state`` ({steps, step, loss, eta_s, points, ...} or null) into the widget area at ``top``. */
export function drawChart(ctx, width, top, state, colors) {
  const box = { x: MARGIN, y: top + 4, w: width - 2 * MARGIN, h: CHART_HEIGHT - 8 };
  ctx.save();
  ctx.fillStyle = colors.background;
  ctx.strokeStyle = colors.outline;
  ctx.beginPath();
  if (ctx.roundRect) ctx.roundRect(box.x, box.y, box.w, box.h, 6);
  else ctx.rect(box.x, box.y, box.w, box.h);
  ctx.fill();
  ctx.stroke();

  ctx.font = "11px sans-serif";
  ctx.textBaseline = "middle";
  ctx.fillStyle = colors.text;
  ctx.textAlign = "left";
  ctx.fillText(statusLine(state), box.x + 6, box.y + HEADER / 2 + 2, box.w - 12);

  const plot = { x: box.x + 6, y: box.y + HEADER + 6, w: box.w - 12, h: box.h - HEADER - 14 };
  if (state && state.points.length > 0) {
    const [lo, hi] = range(state.points);
    ctx.lineWidth = 1;
    ctx.strokeStyle = colors.raw;
    polyline(ctx, state.points, state.steps, plot, lo, hi);
    ctx.lineWidth = 2;
    ctx.strokeStyle = colors.line;
    polyline(ctx, smoothed(state.points), state.steps, plot, lo, hi);
    if (state.converged_at != null) {
      // where early stopping ended the run (the x axis spans all `steps`)
      const px = plot.x + (plot.w * state.converged_at) / Math.max(state.steps, 1);
      ctx.lineWidth = 1;
      ctx.strokeStyle = colors.secondary;
      ctx.setLineDash?.([3, 3]);
      ctx.beginPath();
      ctx.moveTo(px, plot.y);
      ctx.lineTo(px, plot.y + plot.h);
      ctx.stroke();
      ctx.setLineDash?.([]);
    }
    ctx.fillStyle = colors.secondary;
    ctx.textAlign = "right";
    ctx.fillText(formatLoss(hi), plot.x + plot.w, plot.y + 4);
    ctx.fillText(formatLoss(lo), plot.x + plot.w, plot.y + plot.h - 4);
  }
  ctx.restore();
}
