// Dashboard: the subnet at a glance, polled live; scores and weights over time drawn in SVG.
import { $, api, el, fmt, shortKey, showError } from "./engram.js";

const POLL_MS = 3000;
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#3b5bdb", "#e8590c", "#2b8a3e", "#c2255c", "#7048e8", "#0b7285", "#e67700", "#5c940d"];
const H = 220;
const PAD = { left: 40, right: 10, top: 10, bottom: 26 };
let snapshots = [];
let timer = null;

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function colorOf(uid, uids) {
  return COLORS[uids.indexOf(uid) % COLORS.length];
}

function ago(seconds) {
  if (seconds < 3) return "now";
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  return `${Math.round(seconds / 60)} min ago`;
}

/** A line per miner uid of `field` over time; y from 0 to the largest value (at least 1 for scores). */
function drawChart(field, yFloor) {
  const chart = $(`#chart-${field}`);
  const legend = $(`#legend-${field}`);
  // One SVG unit per CSS pixel, so labels keep their size on a phone.
  const W = Math.max(280, Math.round(chart.getBoundingClientRect().width) || 600);
  chart.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const uids = [...new Set(snapshots.flatMap((s) => Object.keys(s.miners)))].sort((a, b) => a - b);
  const points = (uid) => snapshots
    .filter((s) => s.miners[uid] && s.miners[uid][field] != null)
    .map((s) => [s.t, s.miners[uid][field]]);
  const series = uids.map((uid) => ({ uid, points: points(uid) })).filter((s) => s.points.length);
  chart.replaceChildren();
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
    return;
  }
  const all = series.flatMap((s) => s.points);
  const tMin = Math.min(...all.map((p) => p[0]));
  const tMax = Math.max(...all.map((p) => p[0]));
  const yMax = Math.max(yFloor, ...all.map((p) => p[1])) || 1;
  const x = (t) => (tMax === tMin ? x1 : x0 + ((t - tMin) / (tMax - tMin)) * (x1 - x0));
  const y = (v) => y0 - (v / yMax) * (y0 - y1);
  for (const v of [0, yMax / 2, yMax]) {
    chart.append(svg("line", { class: "axis", x1: x0, y1: y(v), x2: x1, y2: y(v), "stroke-dasharray": "2 4" }));
    chart.append(svg("text", { x: x0 - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v, 2)));
  }
  const now = Date.now() / 1000;
  chart.append(svg("text", { x: x0, y: H - 6 }, ago(now - tMin)));
  chart.append(svg("text", { x: x1, y: H - 6, "text-anchor": "end" }, ago(now - tMax)));
  for (const s of series) {
    const color = colorOf(s.uid, uids);
    const line = s.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    chart.append(svg("polyline", { points: line, stroke: color, "data-uid": s.uid }));
    if (s.points.length === 1) {
      const [t, v] = s.points[0];
      chart.append(svg("circle", { cx: x(t), cy: y(v), r: 3, fill: color }));
    }
  }
  const latest = series.map((s) => `uid ${s.uid} ${fmt(s.points.at(-1)[1], 3)}`).join(", ");
  chart.setAttribute("aria-label", `Miner ${field}s over the last ${ago(now - tMin).replace(" ago", "")}; latest: ${latest}`);
  legend.replaceChildren(
    ...series.map((s) => {
      const swatch = svg("svg", { width: 12, height: 12, "aria-hidden": "true" });
      swatch.append(svg("rect", { width: 12, height: 12, rx: 2, fill: colorOf(s.uid, uids) }));
      return el("li", {}, swatch, `uid ${s.uid}`);
    }),
  );
}

/** A miner's weight as its validator reports it, else the mean of the weights set on chain. */
function chainWeight(view, uid) {
  const rows = Object.values(view.weights || {});
  if (!rows.length) return null;
  return rows.reduce((sum, row) => sum + (row[String(uid)] || 0), 0) / rows.length;
}

function renderNetwork(view) {
  const neurons = view.neurons;
  const miners = neurons.filter((n) => n.role === "miner");
  const serving = miners.filter((n) => n.serving);
  const validator = view.validator || {};
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
      return el("tr", { "data-uid": n.uid, "data-role": n.role },
        el("td", { class: "num" }, n.uid),
        el("td", {}, shortKey(n.hotkey)),
        el("td", {}, n.role),
        el("td", { class: "num" }, fmt(n.stake, 0)),
        el("td", {}, n.role === "miner"
          ? el("span", { class: `badge ${n.serving ? "ok" : "bad"}` }, n.serving ? "serving" : "down")
          : "—"),
        el("td", { class: "num" }, fmt(n.recall, 3)),
        el("td", { class: "num" }, n.latency_ms == null ? "—" : `${fmt(n.latency_ms, 1)} ms`),
        el("td", { class: "num" }, fmt(n.proof_rate, 2)),
        el("td", { class: "num", "data-field": "score" }, fmt(n.score, 3)),
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
refresh().then(schedule);
