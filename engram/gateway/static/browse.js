// Browse: semantic search with a metadata filter, and pages of a namespace's records.
import { $, api, busy, cidLink, copyButton, el, excerpt, fmt, metaList, showError } from "./engram.js";

const PAGE = 20;
let offset = 0;
let namespace = "";

function hit(result) {
  return el(
    "li",
    {},
    el("div", { class: "head" },
      el("span", { class: "score", title: "cosine similarity" }, fmt(result.score, 3)),
      cidLink(result.cid),
      copyButton(result.cid, "Copy CID")),
    el("p", { class: "text" }, excerpt(result.text) || el("span", { class: "empty" }, "no text (a raw embedding)")),
    metaList(result.metadata),
  );
}

async function search(event) {
  event?.preventDefault();
  const status = $("#search-status");
  const list = $("#search-results");
  const query = $("#query").value.trim();
  if (!query) {
    showError(status, new Error("Type what you are looking for."));
    $("#query").focus();
    return;
  }
  const topK = Number($("#top-k").value || 10);
  if (!Number.isInteger(topK) || topK < 1 || topK > 100) {
    showError(status, new Error("top-k must be a whole number from 1 to 100."));
    $("#top-k").focus();
    return;
  }
  const body = { query_text: query, top_k: topK };
  const ns = $("#search-namespace").value.trim();
  if (ns) body.namespace = ns;
  const filter = $("#filter").value.trim();
  if (filter) {
    try {
      body.filter = JSON.parse(filter);
    } catch (error) {
      showError(status, new Error(`The filter is not valid JSON: ${error.message}`));
      $("#filter").focus();
      return;
    }
  }
  const params = new URLSearchParams({ q: query });
  if (ns) params.set("ns", ns);
  history.replaceState(null, "", `?${params}`);
  status.replaceChildren(el("p", {}, "Searching every serving miner…"));
  await busy($("#search-form button[type=submit]"), async () => {
    try {
      const answer = await api("/QuerySynapse", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      list.replaceChildren(...answer.results.map(hit));
      status.replaceChildren(
        el("p", {}, answer.results.length
          ? `${answer.results.length} result${answer.results.length === 1 ? "" : "s"} in ${fmt(answer.latency_ms, 0)} ms.`
          : `Nothing found in namespace "${ns || "default"}"${filter ? " with that filter" : ""}.`),
      );
    } catch (error) {
      list.replaceChildren();
      showError(status, error);
    }
  });
}

async function showRecords() {
  const status = $("#records-status");
  const table = $("#records-table");
  const params = new URLSearchParams({ limit: PAGE, offset });
  if (namespace) params.set("namespace", namespace);
  status.replaceChildren(el("p", {}, "Loading…"));
  try {
    const page = await api(`/list?${params}`);
    const rows = page.records.map((r) =>
      el("tr", {},
        el("td", { class: "nowrap" }, cidLink(r.cid, true)),
        el("td", {}, el("div", { class: "excerpt" }, excerpt(r.text, 160))),
        el("td", {}, metaList(r.metadata))),
    );
    table.tBodies[0].replaceChildren(...rows);
    table.hidden = rows.length === 0;
    const name = namespace || "default";
    if (page.total === 0) {
      status.replaceChildren(el("p", { class: "empty" }, `No records in namespace "${name}" yet. Store some in the `,
        el("a", { href: "/" }, "Playground"), "."));
    } else {
      status.replaceChildren();
    }
    $("#page-info").textContent = page.total
      ? `${offset + 1}–${offset + rows.length} of ${page.total} in "${name}"`
      : "";
    $("#prev-page").disabled = offset === 0;
    $("#next-page").disabled = offset + rows.length >= page.total;
  } catch (error) {
    table.hidden = true;
    $("#page-info").textContent = "";
    showError(status, error);
  }
}

$("#search-form").addEventListener("submit", search);
$("#records-form").addEventListener("submit", (event) => {
  event.preventDefault();
  namespace = $("#records-namespace").value.trim();
  offset = 0;
  showRecords();
});
$("#prev-page").addEventListener("click", () => {
  offset = Math.max(0, offset - PAGE);
  showRecords();
});
$("#next-page").addEventListener("click", () => {
  offset += PAGE;
  showRecords();
});

const start = new URLSearchParams(location.search);
if (start.get("ns")) {
  $("#search-namespace").value = start.get("ns");
  $("#records-namespace").value = start.get("ns");
  namespace = start.get("ns");
}
if (start.get("q")) {
  $("#query").value = start.get("q");
  search();
}
showRecords();
