// One job, followed live (GET /jobs/{id} every second until it is final): status, progress bar, and by kind the
// prediction card, the ranked results or the training curves.
import { api } from "./api.js";
import { designView } from "./design.js";
import { h, replace } from "./dom.js";
import { duration, FINAL, STATUS_WORDS, when } from "./format.js";
import { poll } from "./poll.js";
import { predictionCard } from "./prediction.js";
import { resultsView } from "./results.js";
import { trainingView } from "./training.js";

const POLL_MS = 1000;

/** A progress bar with its words: "7 of 10 structures (1 failed)" or "epoch 3 of 50". */
export function progressBar(job, { big = false } = {}) {
  const p = job.progress || { done: 0, failed: 0, total: 0 };
  const finished = job.kind === "training" ? p.done : p.done + p.failed;
  const words = job.kind === "training"
    ? (p.total ? `epoch ${p.done} of ${p.total}` : "preparing")
    : job.kind === "design" ? (FINAL.has(job.status) ? "ranked" : "ranking")
    : `${finished} of ${p.total} structure${p.total === 1 ? "" : "s"}${p.failed ? ` (${p.failed} failed)` : ""}`;
  const bar = h("progress", { max: Math.max(1, p.total), value: Math.min(finished, Math.max(1, p.total)),
                              "aria-label": `progress: ${words}` });
  if (!p.total && !FINAL.has(job.status)) bar.removeAttribute("value");  // indeterminate while counting
  return h("div", { class: `progress${big ? " big" : ""}` }, bar, h("span", { class: "progress-text" }, words));
}

export function statusBadge(status) {
  return h("span", { class: `badge ${status}`, "data-status": status }, STATUS_WORDS[status] || status);
}

/** A job's display name: its label, or its kind and short id. */
export function jobTitle(job) {
  const kinds = { predict: "Prediction", screening: "Screening", training: "Training", design: "Design" };
  return job.name || `${kinds[job.kind] || job.kind} ${job.id.slice(0, 8)}`;
}

/**
 * Follow job ``jobId`` in ``container``. ``heading`` is h1 on the job page, h3 on the dashboard.
 * @returns {{stop: function}}
 */
export function followJob(container, jobId, { heading = "h1", link = false, onUpdate = null } = {}) {
  const head = h("div", { class: "job-summary" });
  const meta = h("div", { class: "job-meta" });
  const body = h("div", { class: "job-body" });
  const notice = h("p", { class: "error", role: "alert" });
  replace(container, head, meta, notice, body);
  let view = null, kind = null, predictionShown = false;

  async function step() {
    const job = await api(`/jobs/${encodeURIComponent(jobId)}`);
    notice.textContent = "";
    if (kind !== job.kind) {
      kind = job.kind;
      if (kind === "screening") view = resultsView(body, job.id);
      else if (kind === "training") view = trainingView(body, job);
      else if (kind === "design") view = designView(body);
      else replace(body, h("p", { class: "muted" }, "predicting…"));
    }
    // the body first, then the status: a page that says "finished" shows the final results, never stale rows
    if (kind === "screening" || kind === "training" || kind === "design") await view.refresh(job);
    if (kind === "predict" && FINAL.has(job.status) && !predictionShown) {
      predictionShown = true;
      const page = await api(`/jobs/${encodeURIComponent(job.id)}/results?limit=1`);
      const item = page.items[0];
      replace(body, item ? predictionCard(item, { heading: heading === "h1" ? "h2" : "h4" })
        : h("p", { class: "error" }, job.error || "this job has no structure"));
    }
    const title = jobTitle(job);
    replace(head, h(heading, {}, link ? h("a", { href: `/ui/jobs/${job.id}` }, title) : title), statusBadge(job.status),
      progressBar(job, { big: true }));
    const elapsed = (new Date(FINAL.has(job.status) ? job.updated_at : Date.now()) - new Date(job.created_at)) / 1000;
    replace(meta, h("p", { class: "muted" }, [
      job.model ? `model ${job.model}` : null, `submitted ${when(job.created_at)}`,
      FINAL.has(job.status) ? `took ${duration(elapsed)}` : `running for ${duration(elapsed)}`,
      link ? null : `job id ${job.id}`,
    ].filter(Boolean).join(" · ")),
    job.error && job.kind !== "predict" ? h("p", { class: "error" }, job.error) : null);
    if (onUpdate) onUpdate(job);
    return !FINAL.has(job.status);
  }

  return poll(step, { interval: POLL_MS, onError: (err) => {
    notice.textContent = err.status === 404 ? err.detail : `could not read the job: ${err.message} (retrying)`;
  } });
}
