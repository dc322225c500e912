// Dashboard: the subnet at a glance, polled live; scores and weights over time drawn in SVG.
import { $, api, el, fmt, shortKey, showError } from "./engram.js";

const POLL_MS = 3000;
const SVG = "http://www.w3.org/2000/svg";
// A series is told apart by colour, dash pattern and end marker together (8 x 5 x 4 styles),
// so lines that coincide, or a reader who cannot tell the colours apart, still separate them.
const COLORS = ["#3b5bdb", "#e8590c", "#2b8a3e", "#c2255c", "#7048e8", "#0b7285", "#e67700", "#5c940d"];
const DASHES = ["", "8 4", "2 3", "10 3 2 3", "4 4"];
const MARKERS = ["circle", "square", "triangle", "diamond"];
const SPREAD_PX = 3; // points closer than this are fanned out, in uid order, around their value
const H = 220;
const PAD = { left: 40, right: 10, top: 10, bottom: 26 };
let snapshots = [];
let timer = null;
const charts = {}; // field -> what the hover read-out needs from the last drawing
const hovered = {}; // field -> the x (SVG units) the pointer is over, kept across redraws

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function ago(seconds) {
  if (seconds < 3) return "now";
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 90 * 60) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

/** Whether a miner's recall, latency, proof rate and score are left over from an earlier
 * round: it is not serving, or the validator's last score round (begun at `scoredAt`) did
 * not measure it (a measured miner's `measuredAt` is after the round began). */
function isStale(serving, measuredAt, scoredAt) {
  if (!serving) return true;
  return measuredAt != null && scoredAt != null && measuredAt < scoredAt;
}

function styleOf(uid, uids) {
  const i = uids.indexOf(uid);
  return { color: COLORS[i % COLORS.length], dash: DASHES[i % DASHES.length], marker: MARKERS[i % MARKERS.length] };
}

function marker(shape, cx, cy, color, r = 4) {
  const attrs = { fill: color, class: "marker" };
  if (shape === "circle") return svg("circle", { ...attrs, cx, cy, r });
  if (shape === "square") return svg("rect", { ...attrs, x: cx - r, y: cy - r, width: 2 * r, height: 2 * r });
  const pts = shape === "triangle"
    ? [[cx, cy - r - 1], [cx + r + 1, cy + r], [cx - r - 1, cy + r]]
    : [[cx, cy - r - 1], [cx + r + 1, cy], [cx, cy + r + 1], [cx - r - 1, cy]];
  return svg("polygon", { ...attrs, points: pts.map((p) => p.join(",")).join(" ") });
}

/** A short line in a series' colour and dash with its marker, for the legend and read-out. */
function swatch({ color, dash, marker: shape }) {
  const icon = svg("svg", { width: 30, height: 12, "aria-hidden": "true" });
  icon.append(svg("line", { x1: 1, y1: 6, x2: 24, y2: 6, stroke: color, "stroke-width": 2, "stroke-dasharray": dash || "none" }));
  icon.append(marker(shape, 24, 6, color, 3.5));
  return icon;
}

/** Offsets (px) that fan out the points of one snapshot that would be drawn on top of each
 * other: in each run of points less than SPREAD_PX apart, the k-th of n (top to bottom,
 * equal values in uid order) moves by (k - (n - 1) / 2) x SPREAD_PX, so identical miners
 * draw parallel lines instead of one and no two points end up closer than SPREAD_PX. */
function spread(points) {
  const sorted = [...points].sort((a, b) => a.y - b.y || a.order - b.order);
  const offsets = new Map();
  let cluster = [];
  const flush = () => {
    cluster.forEach((p, k) => offsets.set(p.uid, (k - (cluster.length - 1) / 2) * SPREAD_PX));
    cluster = [];
  };
  for (const p of sorted) {
    if (cluster.length && p.y - cluster.at(-1).y >= SPREAD_PX) flush();
    cluster.push(p);
  }
  flush();
  return offsets;
}

/** A miner's `field` in one snapshot, or null where there is none to draw: scores are drawn
 * only when they were measured in that snapshot's round (a down miner's line breaks). */
function valueAt(snapshot, uid, field) {
  const m = snapshot.miners[uid];
  if (!m || m[field] == null) return null;
  if (field === "score" && isStale(m.serving, m.measured_at, snapshot.scored_at)) return null;
  return m[field];
}

/** Lines per miner uid of `field` over time, y from 0 to the largest value (at least `yFloor`);
 * a line breaks where a snapshot has no value for it. */
function drawChart(field, yFloor) {
  const chart = $(`#chart-${field}`);
  const legend = $(`#legend-${field}`);
  // One SVG unit per CSS pixel, so labels keep their size on a phone.
  const W = Math.max(280, Math.round(chart.getBoundingClientRect().width) || 600);
  chart.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const uids = [...new Set(snapshots.flatMap((s) => Object.keys(s.miners)))].sort((a, b) => a - b);
  const series = uids
    .map((uid) => ({ uid, values: snapshots.map((s) => valueAt(s, uid, field)) }))
    .filter((s) => s.values.some((v) => v != null));
  chart.replaceChildren();
  delete charts[field];
  const x0 = PAD.left;
  const x1 = W - PAD.right;
  const y0 = H - PAD.bottom;
  const y1 = PAD.top;
  chart.append(svg("line", { class: "axis", x1: x0, y1: y0, x2: x1, y2: y0 }));
  chart.append(svg("line", { class: "axis", x1: x0, y1: y1, x2: x0, y2: y0 }));
  if (!series.length) {
    chart.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "Waiting for the validator's first round…"));
    legend.replaceChildren();
    chart.setAttribute("aria-label", `No ${field} history yet`);
    hideTip(field);
    return;
  }
  const used = snapshots.filter((_, i) => series.some((s) => s.values[i] != null));
  const tMin = used[0].t;
  const tMax = used.at(-1).t;
  const yMax = Math.max(yFloor, ...series.flatMap((s) => s.values.filter((v) => v != null))) || 1;
  const x = (t) => (tMax === tMin ? x1 : x0 + ((t - tMin) / (tMax - tMin)) * (x1 - x0));
  const y = (v) => y0 - (v / yMax) * (y0 - y1);
  for (const v of [0, yMax / 2, yMax]) {
    chart.append(svg("line", { class: "axis", x1: x0, y1: y(v), x2: x1, y2: y(v), "stroke-dasharray": "2 4" }));
    chart.append(svg("text", { x: x0 - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v, 2)));
  }
  const now = Date.now() / 1000;
  chart.append(svg("text", { x: x0, y: H - 6 }, ago(now - tMin)));
  chart.append(svg("text", { x: x1, y: H - 6, "text-anchor": "end" }, ago(now - tMax)));
  // Where each point is drawn: its value, fanned out from the points it would hide.
  const drawnY = series.map(() => new Array(snapshots.length).fill(null));
  snapshots.forEach((_, i) => {
    const here = series
      .map((s, k) => ({ uid: s.uid, order: k, y: s.values[i] == null ? null : y(s.values[i]) }))
      .filter((p) => p.y != null);
    const offsets = spread(here);
    for (const p of here) drawnY[p.order][i] = p.y + offsets.get(p.uid);
  });
  series.forEach((s, k) => {
    const { color, dash, marker: shape } = styleOf(s.uid, uids);
    const last = s.values.findLastIndex((v) => v != null);
    const title = `uid ${s.uid}: ${field} ${fmt(s.values[last], 3)} ${ago(now - snapshots[last].t)}`;
    let run = [];
    const flush = () => {
      if (run.length > 1) {
        const line = svg("polyline", {
          points: run.map((i) => `${x(snapshots[i].t).toFixed(1)},${drawnY[k][i].toFixed(1)}`).join(" "),
          stroke: color,
          "stroke-dasharray": dash || "none",
          "data-uid": s.uid,
        });
        line.append(svg("title", {}, title));
        chart.append(line);
      }
      run = [];
    };
    s.values.forEach((v, i) => (v == null ? flush() : run.push(i)));
    flush();
    const end = marker(shape, x(snapshots[last].t), drawnY[k][last], color);
    end.setAttribute("data-uid", s.uid);
    end.append(svg("title", {}, title));
    chart.append(end);
  });
  const latest = snapshots.at(-1).miners;
  const state = (uid) => {
    const m = latest[uid];
    if (!m) return " (gone)";
    if (!m.serving) return " (down)";
    return "";
  };
  const described = series.map((s) => `uid ${s.uid}${state(s.uid)} ${fmt(s.values.findLast((v) => v != null), 3)}`);
  chart.setAttribute("aria-label", `Miner ${field}s over the last ${ago(now - tMin).replace(" ago", "")}; latest: ${described.join(", ")}`);
  legend.replaceChildren(
    ...series.map((s) => {
      const down = state(s.uid);
      return el("li", { "data-uid": s.uid, class: down ? "down" : null }, swatch(styleOf(s.uid, uids)), `uid ${s.uid}${down}`);
    }),
  );
  charts[field] = { x, x0, x1, y0, y1, tMin, tMax, series, uids, snaps: snapshots };
  if (hovered[field] != null) showTip(field, hovered[field]);
}

/** The hover read-out: a guide at the nearest snapshot and every miner's value there. */
function showTip(field, px) {
  const c = charts[field];
  const tip = $(`#tip-${field}`);
  if (!c) return hideTip(field);
  hovered[field] = px;
  const t = c.tMax === c.tMin ? c.tMax : c.tMin + ((px - c.x0) / (c.x1 - c.x0)) * (c.tMax - c.tMin);
  let best = 0;
  c.snaps.forEach((s, i) => {
    if (Math.abs(s.t - t) < Math.abs(c.snaps[best].t - t)) best = i;
  });
  const snap = c.snaps[best];
  const chart = $(`#chart-${field}`);
  chart.querySelector(".guide")?.remove();
  const gx = c.x(snap.t);
  chart.append(svg("line", { class: "guide", x1: gx, y1: c.y1, x2: gx, y2: c.y0 }));
  const rows = c.series.map((s) => {
    const v = s.values[best];
    const m = snap.miners[s.uid];
    const note = v != null ? fmt(v, field === "score" ? 3 : 4) : m && !m.serving ? "down" : "—";
    return el("li", {}, swatch(styleOf(s.uid, c.uids)), `uid ${s.uid}: ${note}`);
  });
  tip.replaceChildren(el("div", { class: "when" }, new Date(snap.t * 1000).toLocaleTimeString()), el("ul", {}, rows));
  const box = chart.getBoundingClientRect();
  const scale = box.width / (c.x1 + PAD.right);
  tip.hidden = false;
  const left = gx * scale + 12;
  tip.style.left = `${Math.min(left, box.width - tip.offsetWidth - 4)}px`;
  tip.style.top = `${PAD.top}px`;
}

function hideTip(field) {
  const tip = $(`#tip-${field}`);
  if (tip) tip.hidden = true;
  $(`#chart-${field}`)?.querySelector(".guide")?.remove();
  hovered[field] = null;
}

function hover(field) {
  const chart = $(`#chart-${field}`);
  chart.addEventListener("pointermove", (e) => {
    const c = charts[field];
    if (!c) return;
    const box = chart.getBoundingClientRect();
    const px = ((e.clientX - box.left) / box.width) * (c.x1 + PAD.right);
    if (px < c.x0 || px > c.x1) return hideTip(field);
    showTip(field, px);
  });
  chart.addEventListener("pointerleave", () => hideTip(field));
}

/** A miner's weight as its validator reports it, else the mean of the weights set on chain. */
function chainWeight(view, uid) {
  const rows = Object.values(view.weights || {});
  if (!rows.length) return null;
  return rows.reduce((sum, row) => sum + (row[String(uid)] || 0), 0) / rows.length;
}

/** A measurement cell; a stale one is greyed and says, on hover, how old it is. */
function measurement(field, text, staleNote) {
  if (!staleNote || text === "—") return el("td", { class: "num", "data-field": field }, text);
  return el("td", { class: "num stale", "data-field": field, "data-stale": "true", title: staleNote }, text);
}

function renderNetwork(view) {
  const neurons = view.neurons;
  const miners = neurons.filter((n) => n.role === "miner");
  const serving = miners.filter((n) => n.serving);
  const validator = view.validator || {};
  const scoredAt = validator.rounds && validator.rounds.score ? validator.rounds.score.at : null;
  const now = Date.now() / 1000;
  $("#net-meta").textContent = `Subnet ${view.netuid} on ${view.chain} · block ${view.block} · tempo ${view.tempo} · updated ${new Date().toLocaleTimeString()}`;
  $("#tile-neurons").textContent = neurons.length;
  $("#tile-serving").textContent = `${serving.length} / ${miners.length}`;
  $("#tile-round").textContent = validator.round ?? "—";
  const weightsRound = validator.rounds && validator.rounds.weights;
  $("#tile-weights-block").textContent = weightsRound ? weightsRound.block : "—";
  const health = view.replica_health || {};
  for (const key of ["healthy", "degraded", "lost"]) {
    $(`#health-${key}`).textContent = `${health[key] ?? "—"} ${key}`;
  }
  const notes = [];
  if (!miners.length) notes.push("No miner is registered on this subnet yet: start one with `engram miner --chain …` or run `engram localnet`.");
  else if (!serving.length) notes.push("No miner is serving: every registered miner has stopped announcing its axon. Reads and writes will fail until one is back.");
  if (validator.error) notes.push(validator.error);
  else if (!view.validator) notes.push("No validator is configured for this gateway (--validator-url), so scores and replica health are not shown.");
  $("#net-error").replaceChildren(...notes.map((n) => el("p", { class: "notice" }, n)));
  const empty = $("#neurons-empty");
  empty.hidden = neurons.length > 0;
  empty.textContent = neurons.length ? "" : "No neuron is registered on this subnet.";
  $("#neurons-table").tBodies[0].replaceChildren(
    ...neurons.map((n) => {
      const weight = n.weight ?? (n.role === "miner" ? chainWeight(view, n.uid) : null);
      const measuredAt = ((validator.miners || {})[String(n.uid)] || {}).updated_at ?? null;
      const measured = n.role === "miner" && measuredAt != null && n.score != null;
      const stale = measured && isStale(n.serving, measuredAt, scoredAt);
      const age = measured ? ago(now - measuredAt) : null;
      const staleNote = stale
        ? `last measured ${age}${n.serving ? "; left out of the validator's latest round" : ", before the miner went down"}`
        : null;
      const status = n.role === "miner"
        ? [
          el("span", { class: `badge ${n.serving ? "ok" : "bad"}` }, n.serving ? "serving" : "down"),
          stale ? el("span", { class: "age" }, `last measured ${age}`) : null,
        ]
        : "—";
      return el("tr", { "data-uid": n.uid, "data-role": n.role, "data-stale": stale ? "true" : null },
        el("td", { class: "num" }, n.uid),
        el("td", {}, shortKey(n.hotkey)),
        el("td", {}, n.role),
        el("td", { class: "num" }, fmt(n.stake, 0)),
        el("td", { "data-field": "serving" }, status),
        measurement("recall", fmt(n.recall, 3), staleNote),
        measurement("latency", n.latency_ms == null ? "—" : `${fmt(n.latency_ms, 1)} ms`, staleNote),
        measurement("proof_rate", fmt(n.proof_rate, 2), staleNote),
        measurement("score", fmt(n.score, 3), staleNote),
        el("td", { class: "num", "data-field": "ema" }, fmt(n.ema, 4)),
        el("td", { class: "num", "data-field": "weight" }, fmt(weight, 4)),
        el("td", { class: "num" }, fmt(n.incentive, 4)));
    }),
  );
}

async function refresh() {
  try {
    const since = snapshots.length ? snapshots.at(-1).t : 0;
    const [view, history] = await Promise.all([api("/api/network"), api(`/api/history?since=${since}`)]);
    snapshots = snapshots.concat(history.snapshots).slice(-history.size);
    renderNetwork(view);
    drawChart("score", 1);
    drawChart("weight", 0.5);
  } catch (error) {
    $("#net-meta").textContent = `Not updated since ${new Date().toLocaleTimeString()}; retrying every ${POLL_MS / 1000} s.`;
    showError($("#net-error"), error);
  }
}

function schedule() {
  clearTimeout(timer);
  if (document.hidden) return;
  timer = setTimeout(async () => {
    await refresh();
    schedule();
  }, POLL_MS);
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden) refresh().then(schedule);
  else clearTimeout(timer);
});
hover("score");
hover("weight");
refresh().then(schedule);
