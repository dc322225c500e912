// Playground: store a text with metadata, or upload a PDF / text / Markdown file.
import { $, api, busy, cidLink, copyButton, el, excerpt, replicaList, showError, uidsByHotkey } from "./engram.js";

let rows = 0;

function addMetaRow(key = "", value = "") {
  rows += 1;
  const n = rows;
  const row = el(
    "div",
    { class: "row" },
    el("div", {}, el("label", { for: `meta-key-${n}` }, `Key ${n}`),
      el("input", { id: `meta-key-${n}`, class: "meta-key", autocomplete: "off", spellcheck: "false", value: key })),
    el("div", {}, el("label", { for: `meta-value-${n}` }, `Value ${n}`),
      el("input", { id: `meta-value-${n}`, class: "meta-value", autocomplete: "off", value: value })),
  );
  const remove = el("button", { type: "button", class: "secondary small", "aria-label": `Remove field ${n}` }, "Remove");
  remove.addEventListener("click", () => {
    row.remove();
    $("#add-meta").focus();
  });
  row.append(remove);
  $("#meta-rows").append(row);
  return row;
}

/** "42" → 42, "true" → true, "null" → null, anything else stays text. */
function parseValue(raw) {
  const text = raw.trim();
  if (/^-?\d+(\.\d+)?([eE][+-]?\d+)?$/.test(text) && !/^-?0\d/.test(text)) return Number(text);
  if (text === "true" || text === "false" || text === "null") return JSON.parse(text);
  return raw;
}

function metadata() {
  const out = {};
  for (const row of document.querySelectorAll("#meta-rows .row")) {
    const key = row.querySelector(".meta-key").value.trim();
    const value = row.querySelector(".meta-value").value;
    if (!key && !value) continue;
    if (!key) throw new Error("Every metadata value needs a key.");
    if (key in out) throw new Error(`The metadata key "${key}" is given twice.`);
    out[key] = parseValue(value);
  }
  return out;
}

function stored(cid, replicas, uids) {
  return el(
    "div",
    { class: "stored" },
    el("p", {}, el("strong", {}, "Stored. "), `CID `, cidLink(cid), " ", copyButton(cid, "Copy CID")),
    el("p", {}, `Acknowledged by ${replicas.length} replica${replicas.length === 1 ? "" : "s"}:`),
    replicaList(replicas, uids),
  );
}

async function storeText(event) {
  event.preventDefault();
  const out = $("#text-result");
  const text = $("#text").value;
  if (!text.trim()) {
    showError(out, new Error("Write some text to store."));
    $("#text").focus();
    return;
  }
  let body;
  try {
    body = { text, metadata: metadata() };
  } catch (error) {
    showError(out, error);
    return;
  }
  const namespace = $("#text-namespace").value.trim();
  if (namespace) body.namespace = namespace;
  out.replaceChildren(el("p", {}, "Embedding and writing to the replicas…"));
  await busy(event.submitter || $("#text-form button[type=submit]"), async () => {
    try {
      const [answer, uids] = await Promise.all([
        api("/IngestSynapse", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) }),
        uidsByHotkey(),
      ]);
      out.replaceChildren(stored(answer.cid, answer.replicas || [], uids));
    } catch (error) {
      showError(out, error);
    }
  });
}

function uploadReport(doc, uids) {
  const where = (c) => (c.page ? `page ${c.page}` : c.section || "—");
  const table = el(
    "table",
    {},
    el("thead", {}, el("tr", {}, ["#", "Where", "Passage", "CID", "Replicas"].map((h) => el("th", { scope: "col" }, h)))),
    el(
      "tbody",
      {},
      doc.chunks.map((c) =>
        el(
          "tr",
          {},
          el("td", { class: "num" }, c.chunk + 1),
          el("td", {}, where(c)),
          el("td", {}, el("div", { class: "excerpt" }, excerpt(c.text, 120))),
          el("td", { class: "nowrap" }, c.cid ? cidLink(c.cid, true) : el("span", { class: "badge bad" }, "failed")),
          el("td", {}, c.error ? el("span", { class: "error" }, c.error) : replicaList(c.replicas, uids, true)),
        ),
      ),
    ),
  );
  const pages = doc.pages ? ` from ${doc.pages} page${doc.pages === 1 ? "" : "s"}` : "";
  return el(
    "div",
    {},
    el("p", {}, el("strong", {}, `${doc.filename}: `),
      `${doc.stored} of ${doc.chunks.length} passage${doc.chunks.length === 1 ? "" : "s"}${pages} stored.`),
    el("p", {}, "content_cid ", el("code", { class: "cid" }, doc.content_cid), " ", copyButton(doc.content_cid, "Copy")),
    el("div", { class: "table-wrap", role: "region", "aria-label": "Stored passages", tabindex: "0" }, table),
  );
}

async function uploadFile(event) {
  event.preventDefault();
  const out = $("#file-result");
  const input = $("#file");
  const file = input.files[0];
  if (!file) {
    showError(out, new Error("Choose a PDF, text or Markdown file first."));
    input.focus();
    return;
  }
  const limit = Number(input.dataset.maxBytes);
  if (file.size === 0) {
    showError(out, new Error(`${file.name} is empty.`));
    return;
  }
  if (limit && file.size > limit) {
    showError(out, new Error(`${file.name} is ${(file.size / 1048576).toFixed(1)} MiB; the limit is ${(limit / 1048576).toFixed(0)} MiB.`));
    return;
  }
  const params = new URLSearchParams({ filename: file.name });
  const namespace = $("#file-namespace").value.trim();
  if (namespace) params.set("namespace", namespace);
  const extra = $("#file-metadata").value.trim();
  if (extra) {
    try {
      JSON.parse(extra);
    } catch (error) {
      showError(out, new Error(`The metadata is not valid JSON: ${error.message}`));
      $("#file-metadata").focus();
      return;
    }
    params.set("metadata", extra);
  }
  out.replaceChildren(el("p", {}, `Reading ${file.name} and writing its passages…`));
  await busy(event.submitter || $("#file-form button[type=submit]"), async () => {
    try {
      const [doc, uids] = await Promise.all([
        api(`/api/upload?${params}`, {
          method: "POST",
          headers: { "content-type": file.type || "application/octet-stream" },
          body: file,
        }),
        uidsByHotkey(),
      ]);
      out.replaceChildren(uploadReport(doc, uids));
    } catch (error) {
      showError(out, error);
    }
  });
}

addMetaRow();
$("#add-meta").addEventListener("click", () => addMetaRow().querySelector("input").focus());
$("#text-form").addEventListener("submit", storeText);
$("#file-form").addEventListener("submit", uploadFile);
