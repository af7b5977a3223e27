// A screening's ranked results (GET /jobs/{id}/results): sortable table, per-item errors in words, CSV download,
// and the card (with energy grid) of any structure clicked.
import { api, downloadLink } from "./api.js";
import { h, replace } from "./dom.js";
import { FINAL, num } from "./format.js";
import { predictionCard } from "./prediction.js";
import { sortableTable } from "./table.js";
import { unitLabel } from "./units.js";

/** Rows shown in the browser; the CSV always has every row. */
export const MAX_ROWS = 5000;
const PAGE = 1000;
/** While a job runs: the best rows so far, refreshed at most every few seconds. */
const LIVE_ROWS = 200;
const LIVE_REFRESH_MS = 3000;

/**
 * Mount the results of job ``jobId`` in ``container``; call ``refresh(job)`` with each polled job.
 * @returns {{refresh: function(object): Promise<void>}}
 */
export function resultsView(container, jobId) {
  const summary = h("p", { class: "results-summary", role: "status", "aria-live": "polite" }, "loading results…");
  const csvHref = `/jobs/${encodeURIComponent(jobId)}/results?format=csv`;
  const csv = downloadLink(csvHref, `results_${jobId}.csv`, "Download ranked CSV");
  const tools = h("p", { class: "results-tools" }, csv, h("small", {}, " (every structure, ranked as below)"));
  const tableSlot = h("div", { class: "table-wrap" });
  const detail = h("div", { class: "structure-detail", "aria-live": "polite" });
  replace(container, summary, tools, tableSlot, detail);

  let items = [], table = null, lastFetch = 0, finalLoaded = false, selected = null, total = 0;

  function columns() {
    const first = items.find((i) => i.prediction)?.prediction;
    const unit = first ? first.unit : "";
    // a structure without a density stays in mol/kg in a volumetric screening: its cell says so
    const withUnit = (x, p, digits) => `${num(x, digits)}${p.unit !== unit ? ` ${unitLabel(p.unit)}` : ""}`;
    const cols = [
      { key: "rank", label: "Rank", numeric: true, value: (r) => r._rank },
      { key: "name", label: "Structure", value: (r) => r.structure?.name || r.name,
        cell: (r) => h("button", { type: "button", class: "link", onclick: () => select(r) },
          r.structure?.name || r.name || "(unnamed)") },
      { key: "value", label: first ? first.property : "Prediction", unit: unitLabel(unit), numeric: true,
        descendingFirst: true, value: (r) => r.prediction?.value ?? null,
        cell: (r) => (r.prediction ? withUnit(r.prediction.value, r.prediction, 4) : null) },
    ];
    if (items.some((i) => Number.isFinite(i.prediction?.uncertainty))) {
      cols.push({ key: "sigma", label: "σ", unit: unitLabel(unit), numeric: true,
        value: (r) => r.prediction?.uncertainty ?? null,
        cell: (r) => (Number.isFinite(r.prediction?.uncertainty) ? withUnit(r.prediction.uncertainty, r.prediction, 2)
          : null) });
    }
    const curve = items.find((i) => Array.isArray(i.prediction?.values))?.prediction.values;
    if (curve) {  // a curve model: a column per pressure and the deliverable capacity, each sortable
      curve.forEach((pt, j) => cols.push({
        key: `p${j}`, label: `${num(pt.pressure_bar)} bar`, unit: unitLabel(unit), numeric: true, descendingFirst: true,
        value: (r) => (Array.isArray(r.prediction?.values) ? r.prediction.values[j]?.value ?? null : null),
        cell: (r) => (Array.isArray(r.prediction?.values) ? num(r.prediction.values[j]?.value, 4) : null) }));
      if (items.some((i) => Number.isFinite(i.prediction?.deliverable_capacity))) {
        cols.push({ key: "deliverable", label: "Deliverable 65 → 5.8 bar", unit: unitLabel(unit), numeric: true,
          descendingFirst: true, value: (r) => r.prediction?.deliverable_capacity ?? null,
          cell: (r) => (Number.isFinite(r.prediction?.deliverable_capacity)
            ? num(r.prediction.deliverable_capacity, 4) : null) });
      }
    }
    if (items.some((i) => typeof i.prediction?.in_domain === "boolean")) {
      cols.push({ key: "domain", label: "In domain", value: (r) => r.prediction?.in_domain ?? null,
        cell: (r) => (typeof r.prediction?.in_domain === "boolean" ? (r.prediction.in_domain ? "yes" : "no") : null) });
    }
    cols.push(
      { key: "status", label: "Status", value: (r) => r.status,
        cell: (r) => (r.error ? h("span", { class: r.status === "failed" ? "error" : null },
          `${r.status}: ${r.error}`) : r.status) },
      { key: "formula", label: "Formula", value: (r) => r.structure?.formula ?? null },
      { key: "atoms", label: "Atoms", numeric: true, value: (r) => r.structure?.n_atoms ?? null },
      { key: "time", label: "Time", unit: "ms", numeric: true, value: (r) => totalMs(r.timings),
        cell: (r) => num(totalMs(r.timings), 3) },
    );
    return cols;
  }

  function draw() {
    const cols = columns();
    const signature = cols.map((c) => `${c.key}:${c.label}:${c.unit || ""}`).join("|");
    if (!table || table.signature !== signature) {
      table = sortableTable({ columns: cols, rows: items, id: "results-table",
        caption: "Ranked by prediction, highest first; click a column header to sort, a structure to see it.",
        rowClass: (r) => [r.status === "failed" ? "failed" : null, r === selected ? "selected" : null]
          .filter(Boolean).join(" ") || null });
      table.signature = signature;
      replace(tableSlot, table.element);
    } else {
      table.setRows(items);
    }
  }

  function select(row) {
    selected = row;
    draw();
    replace(detail, predictionCard(row, { heading: "h3" }));
    detail.scrollIntoView({ behavior: "smooth", block: "nearest" });
  }

  async function fetchRows(limit) {
    const rows = [];
    for (let offset = 0; offset < limit; offset += PAGE) {
      const page = await api(`/jobs/${encodeURIComponent(jobId)}/results?limit=${Math.min(PAGE, limit - offset)}`
                             + `&offset=${offset}`);
      total = page.total;
      rows.push(...page.items);
      if (rows.length >= page.total || page.items.length === 0) break;
    }
    return rows.map((r, i) => ({ ...r, _rank: i + 1 }));
  }

  function describe(job) {
    const counts = job.progress || { done: 0, failed: 0, total };
    const parts = [`${counts.total} structure${counts.total === 1 ? "" : "s"}`, `${counts.done} predicted`];
    if (counts.failed) parts.push(`${counts.failed} failed (the reason is in its row)`);
    const waiting = counts.total - counts.done - counts.failed;
    if (waiting > 0) parts.push(`${waiting} waiting`);
    let text = parts.join(" · ");
    if (items.length < total) text += ` — showing the best ${items.length}; the CSV has all ${total}`;
    replace(summary, text);
  }

  async function refresh(job) {
    const final = FINAL.has(job.status);
    if (final && finalLoaded) return;
    if (!final && Date.now() - lastFetch < LIVE_REFRESH_MS) return;
    lastFetch = Date.now();
    items = await fetchRows(final ? MAX_ROWS : LIVE_ROWS);
    finalLoaded = final;
    if (selected) selected = items.find((i) => i.item_id === selected.item_id) || null;
    draw();
    describe(job);
  }

  return { refresh };
}

function totalMs(t) {
  if (!t) return null;
  const parts = [t.parse_ms, t.voxelize_ms, t.inference_ms].filter((x) => Number.isFinite(x));
  return parts.length ? parts.reduce((a, b) => a + b, 0) : null;
}
