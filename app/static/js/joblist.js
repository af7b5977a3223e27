// The caller's recent jobs (GET /jobs), each linking to its page, with live progress bars.
import { api } from "./api.js";
import { h, replace } from "./dom.js";
import { FINAL, when } from "./format.js";
import { jobTitle, progressBar, statusBadge } from "./jobview.js";
import { poll } from "./poll.js";

const LIMIT = 25;
const ACTIVE_MS = 1500, IDLE_MS = 10000;

/** Mount the job list; ``refresh()`` re-reads it at once (after a submission). */
export function jobList(container) {
  const status = h("p", { class: "muted", role: "status" });
  const table = h("table", { id: "job-list-table" },
    h("caption", {}, "Your most recent jobs, newest first (click one to follow it on its own page)"),
    h("thead", {}, h("tr", {}, ["Job", "Kind", "Model", "Status", "Progress", "Submitted"]
      .map((label) => h("th", { scope: "col" }, label)))),
    h("tbody"));
  replace(container, table, status);
  let active = false;

  async function step() {
    const page = await api(`/jobs?limit=${LIMIT}`);
    active = page.data.some((j) => !FINAL.has(j.status));
    replace(table.tBodies[0], page.data.length ? page.data.map(row)
      : h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No jobs yet: drop CIF files above to start one.")));
    replace(status, page.total > page.data.length ? `${page.data.length} of ${page.total} jobs shown` : "");
    return true;
  }

  const loop = poll(step, { interval: () => (active ? ACTIVE_MS : IDLE_MS), onError: (err) => {
    replace(status, h("span", { class: "error" }, err.status === 401 ? `${err.detail} (use the API key button above)`
      : `could not read the jobs: ${err.message}`));
  } });
  document.addEventListener("retnet:key-changed", () => loop.now());
  return { refresh: () => loop.now() };
}

function row(job) {
  return h("tr", { "data-job-id": job.id },
    h("th", { scope: "row" }, h("a", { href: `/ui/jobs/${job.id}` }, jobTitle(job))),
    h("td", {}, job.kind), h("td", {}, job.model || "–"), h("td", {}, statusBadge(job.status)),
    h("td", {}, progressBar(job)), h("td", {}, when(job.created_at)));
}
