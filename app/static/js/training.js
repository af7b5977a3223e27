// A training job: phase, epoch, live loss and validation curves (from the polled ``details``), then the
// registered model with its metrics and figures.
import { lineChart } from "./chart.js";
import { facts, h, replace } from "./dom.js";
import { fixed, metricRows, metricText, METRIC_LABELS, num } from "./format.js";
import { modelImages } from "./modelimages.js";

const PHASES = { voxelizing: "computing energy grids", training: "training", evaluating: "evaluating",
                 done: "registering the model" };

/**
 * The epochs seen so far: ``details.history`` when the service sends one, else the epochs this browser polled
 * (kept in sessionStorage, so a reload keeps the curve).
 */
export class EpochHistory {
  constructor(jobId) {
    this.storageKey = `retnet.history.${jobId}`;
    this.epochs = new Map();
    try {
      for (const e of JSON.parse(sessionStorage.getItem(this.storageKey) || "[]")) this.epochs.set(e.epoch, e);
    } catch { /* nothing kept */ }
  }

  add(details) {
    const list = Array.isArray(details.history) ? details.history : [details];
    for (const e of list) {
      if (!Number.isFinite(e?.epoch) || e.epoch < 1) continue;
      this.epochs.set(e.epoch, { epoch: e.epoch, train_loss: e.train_loss ?? null, val_loss: e.val_loss ?? null,
                                 val_r2: e.val_r2 ?? null });
    }
    try { sessionStorage.setItem(this.storageKey, JSON.stringify(this.list())); } catch { /* full */ }
  }

  list() { return [...this.epochs.values()].sort((a, b) => a.epoch - b.epoch); }
}

/** Mount the training view; call ``refresh(job)`` with every polled job. */
export function trainingView(container, job) {
  const history = new EpochHistory(job.id);
  const status = h("div", { class: "training-status" });
  const charts = h("div", { class: "figures training-charts" });
  const outcome = h("div", { class: "training-outcome" });
  replace(container, status, charts, outcome);
  let outcomeShown = false;

  function refresh(current) {
    const d = current.details || {};
    history.add(d);
    const epochs = history.list();
    const phase = current.status === "succeeded" ? "finished" : current.status === "failed" ? "failed"
      : current.status === "cancelled" ? "cancelled" : PHASES[d.phase] || d.phase || current.status;
    replace(status, facts([
      ["Phase", phase],
      ["Epoch", Number.isFinite(d.epoch) ? `${d.epoch} of ${d.epochs ?? current.progress.total}` : null],
      ["Grids", d.phase === "voxelizing" ? `${d.voxelized} of ${d.structures} structures` : null],
      ["Training / validation", Number.isFinite(d.n_train) ? `${d.n_train} / ${d.n_val} structures` : null],
      ["Training loss", Number.isFinite(d.train_loss)
        ? `${num(d.train_loss, 4)} (mean squared error, label unit²)` : null],
      ["Validation loss", Number.isFinite(d.val_loss) ? num(d.val_loss, 4) : null],
      ["Validation R²", Number.isFinite(d.val_r2) ? fixed(d.val_r2, 3) : null],
      ["Skipped structures", Array.isArray(d.skipped) && d.skipped.length
        ? d.skipped.map((x) => `${x.name}: ${x.reason || x.error || ""}`).join("; ") : null],
      ["Error", current.error],
    ]));
    const loss = [
      { name: "training loss", points: epochs.filter((e) => Number.isFinite(e.train_loss))
        .map((e) => ({ x: e.epoch, y: e.train_loss })) },
      { name: "validation loss", dashed: true, points: epochs.filter((e) => Number.isFinite(e.val_loss))
        .map((e) => ({ x: e.epoch, y: e.val_loss })) },
    ];
    const r2 = epochs.filter((e) => Number.isFinite(e.val_r2)).map((e) => ({ x: e.epoch, y: e.val_r2 }));
    const first = epochs.length ? epochs[0].epoch : null;
    replace(charts,
      h("figure", {}, lineChart({ series: loss, xLabel: "epoch", yLabel: "loss (MSE, label unit²)", yLog: true,
                                  integerX: true, title: "training and validation loss per epoch" }),
        h("figcaption", {}, "Loss per epoch", first > 1 ? ` (from epoch ${first}, when this page started following)`
          : "")),
      r2.length ? h("figure", {}, lineChart({ series: [{ name: "validation R²", points: r2, color: "#2e8540" }],
                                             xLabel: "epoch", yLabel: "validation R²", yMin: -1, integerX: true,
                                             title: "validation R² per epoch" }),
        h("figcaption", {}, "Validation R² per epoch (clipped at −1)")) : null);
    if (current.status === "succeeded" && current.result && !outcomeShown) {
      outcomeShown = true;
      showOutcome(current.result);
    }
  }

  function showOutcome(result) {
    const rows = metricRows(result.metrics || {}).filter((r) => r.metric);
    replace(outcome, h("h3", {}, "Registered model ", h("a", { href: `/ui/models#${encodeURIComponent(result.model)}` },
      result.model)),
      facts([["Metrics on", result.evaluated_on], ["Best epoch", result.best_epoch],
             ["Training / validation", `${result.n_train} / ${result.n_val} structures`]]),
      rows.length ? h("table", { class: "metrics" }, h("caption", {}, "Metrics with 95 % bootstrap CIs"),
        h("thead", {}, h("tr", {}, h("th", {}, "metric"), h("th", { class: "num" }, "value [95 % CI]"))),
        h("tbody", {}, rows.map((r) => h("tr", {}, h("td", {}, `${r.group ? `${r.group} · ` : ""}`
          + `${METRIC_LABELS[r.key] || r.key}`), h("td", { class: "num" }, metricText(r.metric)))))) : null,
      modelImages(result.model));
  }

  refresh(job);
  return { refresh };
}
