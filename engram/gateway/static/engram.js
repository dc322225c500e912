// What every page shares: calls to the gateway with readable errors, and small DOM helpers.

/** An error the gateway answered with ({"error", "code"}), or a network failure. */
export class ApiError extends Error {
  constructor(message, status = 0, code = "network") {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** fetch() a gateway route and return its JSON; throw ApiError with the server's message. */
export async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch {
    throw new ApiError("The gateway did not answer. Is it still running?");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = (body && (body.error || body.detail)) || `HTTP ${response.status}`;
    throw new ApiError(explain(response.status, body && body.code, message), response.status, body && body.code);
  }
  return body;
}

/** The server's message, with a hint for the errors a newcomer meets first. */
function explain(status, code, message) {
  if (code === "chain_unavailable") return `The chain is unreachable: ${message}`;
  if (code === "unavailable" && /no miner/.test(message)) return `No miner is up. ${message}`;
  if (code === "embedder_unavailable") return `The embedding model is not loaded yet: ${message}`;
  return message;
}

/** Build an element: el("a", {href: "/x", class: "y"}, "text", child). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function $(selector) {
  return document.querySelector(selector);
}

/** Replace a container's content with an error box (role=alert is on the container). */
export function showError(container, error) {
  container.replaceChildren(el("p", { class: "error" }, error.message || String(error)));
}

/** "5F3s…x9Qa" with the whole hotkey in a tooltip. */
export function shortKey(hotkey) {
  if (!hotkey) return "—";
  const text = hotkey.length > 14 ? `${hotkey.slice(0, 6)}…${hotkey.slice(-4)}` : hotkey;
  return el("span", { class: "key", title: hotkey }, text);
}

/** A link to a CID's page; `short` shows "v1::0711d5cf…4ed647eb" for tables and phones. */
export function cidLink(cid, short = false) {
  const text = short && cid.length > 24 ? `${cid.slice(0, 12)}…${cid.slice(-8)}` : cid;
  return el("a", { class: "cid", href: `/cid/${cid}`, title: short ? cid : null }, text);
}

/** A number with `digits` decimals, or a dash for missing values. */
export function fmt(value, digits = 3) {
  return value === null || value === undefined || Number.isNaN(value) ? "—" : Number(value).toFixed(digits);
}

export function excerpt(text, chars = 280) {
  if (!text) return "";
  return text.length > chars ? `${text.slice(0, chars).trimEnd()}…` : text;
}

/** Copy text to the clipboard; a hidden textarea where the Clipboard API is not allowed. */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // fall through to the old way
    }
  }
  const area = el("textarea", { class: "offscreen", readonly: true, "aria-hidden": "true" });
  area.value = text;
  document.body.append(area);
  area.select();
  const ok = document.execCommand("copy");
  area.remove();
  return ok;
}

/** A "Copy" button for `text` that says whether it worked in `status` (an aria-live element). */
export function copyButton(text, label = "Copy") {
  const button = el("button", { type: "button", class: "secondary small", "aria-label": `${label} ${text}` }, label);
  button.addEventListener("click", async () => {
    const ok = await copyText(text);
    button.textContent = ok ? "Copied" : "Copy failed";
    setTimeout(() => { button.textContent = label; }, 1500);
  });
  return button;
}

/** Disable a form's submit button while `work` runs, so a double click sends once. */
export async function busy(button, work) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

/** Hotkey → uid from /api/network, to name replicas; empty when the chain is unreachable. */
export async function uidsByHotkey() {
  try {
    const view = await api("/api/network");
    return new Map(view.neurons.map((n) => [n.hotkey, n.uid]));
  } catch {
    return new Map();
  }
}

/** The miners that acknowledged a write: a list of uids and short hotkeys, or (`compact`)
 * one line of uids with the hotkeys in a tooltip. */
export function replicaList(hotkeys, uids, compact = false) {
  if (!hotkeys.length) return el("p", { class: "empty" }, "No replica acknowledged.");
  const name = (h) => (uids.has(h) ? `uid ${uids.get(h)}` : shortKey(h).textContent);
  if (compact) return el("span", { class: "replicas-inline", title: hotkeys.join("\n") }, hotkeys.map(name).join(", "));
  return el(
    "ul",
    { class: "replicas" },
    hotkeys.map((h) => el("li", {}, uids.has(h) ? `uid ${uids.get(h)} · ` : "", shortKey(h))),
  );
}

/** Metadata as small "key: value" chips; long values are cut, whole in a tooltip. */
export function metaList(metadata) {
  const entries = Object.entries(metadata || {});
  if (!entries.length) return el("span", { class: "empty" }, "no metadata");
  return el(
    "ul",
    { class: "meta" },
    entries.map(([k, v]) => {
      const value = JSON.stringify(v);
      const shown = value.length > 30 ? `${value.slice(0, 18)}…${value.slice(-8)}` : value;
      return el("li", { title: shown === value ? null : `${k}: ${value}` }, `${k}: ${shown}`);
    }),
  );
}
