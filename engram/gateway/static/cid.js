// A CID's page: audit each replica routing names for it, and show the record they returned.
import { $, api, busy, copyText, el, fmt, shortKey, showError } from "./engram.js";

const cid = decodeURIComponent(location.pathname.replace(/^\/cid\//, ""));
const VERDICTS = {
  verified: ["ok", "verified"],
  missing: ["warn", "missing"],
  mismatch: ["bad", "tampered"],
  unreachable: ["bad", "unreachable"],
  refused: ["bad", "refused"],
};
const RANKS = ["primary", "second", "third"];

function verdict(name) {
  const [kind, label] = VERDICTS[name] || ["muted", name];
  return el("span", { class: `badge ${kind}` }, label);
}

function showRecord(record) {
  const section = $("#record-section");
  section.hidden = !record;
  if (!record) return;
  $("#rec-namespace").textContent = record.namespace;
  $("#rec-model").textContent = record.model_version;
  $("#rec-embedding").textContent = `${record.dim} dimensions: [${record.embedding_head.map((x) => x.toFixed(4)).join(", ")}, …]`;
  $("#rec-metadata").textContent = JSON.stringify(record.metadata, null, 2);
  const text = $("#rec-text");
  text.textContent = record.text ?? "";
  if (record.text == null) text.append(el("span", { class: "empty" }, "no text (stored as a raw embedding)"));
}

async function audit() {
  const summary = $("#audit-summary");
  const table = $("#audit-table");
  const error = $("#cid-error");
  summary.textContent = "Auditing…";
  error.replaceChildren();
  await busy($("#rerun"), async () => {
    try {
      const report = await api(`/api/cid/${encodeURIComponent(cid)}/audit`);
      table.tBodies[0].replaceChildren(
        ...report.replicas.map((r) =>
          el("tr", { "data-verdict": r.verdict },
            el("td", {}, RANKS[r.rank] || `#${r.rank + 1}`),
            el("td", { class: "num" }, r.uid),
            el("td", {}, shortKey(r.hotkey)),
            el("td", {}, verdict(r.verdict)),
            el("td", { class: "num" }, r.latency_ms == null ? "—" : `${fmt(r.latency_ms, 1)} ms`),
            el("td", {}, r.detail)),
        ),
      );
      table.hidden = report.replicas.length === 0;
      const health = { healthy: "ok", degraded: "warn", lost: "bad" }[report.health];
      summary.replaceChildren(
        el("span", { class: `badge ${health}` }, report.health),
        ` ${report.verified} of ${report.expected} replicas hold a copy that hashes to this CID.`,
      );
      showRecord(report.record);
      if (!report.record) {
        error.replaceChildren(el("p", { class: "error" }, "No replica returned this record. It may never have been stored, or it was deleted."));
      }
    } catch (err) {
      table.hidden = true;
      summary.textContent = "";
      showRecord(null);
      showError(error, err);
      if (err.code === "invalid_cid") {
        $("#audit-section").hidden = true;
        $("#copy-cid").hidden = true;
        error.append(el("p", {}, "Open a record from ", el("a", { href: "/browse" }, "Browse"),
          " or store one in the ", el("a", { href: "/" }, "Playground"), " to see its CID page."));
      }
    }
  });
}

$("#cid").textContent = cid;
$("#copy-cid").addEventListener("click", async () => {
  const ok = await copyText(cid);
  $("#copy-status").textContent = ok ? "Copied to the clipboard." : "Could not copy; select the CID instead.";
});
$("#rerun").addEventListener("click", audit);
audit();
