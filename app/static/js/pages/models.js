// GET /ui/models: every registered model with its card (targets, units, training data, metrics with CIs) and its
// figures (parity, calibration, learning curves, training history).
import { api } from "../api.js";
import { facts, h, replace } from "../dom.js";
import { metricRows, metricText, METRIC_LABELS, METRICS_WITH_UNIT, num, when } from "../format.js";
import { initPage } from "../layout.js";
import { modelImages } from "../modelimages.js";

const box = document.getElementById("models");

initPage();
document.addEventListener("retnet:key-changed", load);
load();

async function load() {
  try {
    const answer = await api("/models");
    if (!answer.data.length) {
      replace(box, h("p", {}, "No model is registered. Train one with POST /training-jobs (or ",
        h("code", {}, "retnet train"), ") and it appears here."));
      return;
    }
    replace(box, h("nav", { "aria-label": "models on this page" }, h("p", {}, "Jump to: ",
      answer.data.map((m, i) => [i ? " · " : "", h("a", { href: `#${cardId(m.ref)}` }, m.ref)]))),
    answer.data.map((m) => modelCard(m, m.ref === answer.default)));
    const wanted = decodeURIComponent(location.hash.slice(1));
    if (wanted) document.getElementById(cardId(wanted))?.scrollIntoView();
  } catch (err) {
    replace(box, h("p", { class: "error" }, `could not read the models: ${err.message}`));
  }
}

function cardId(ref) { return ref.replace(/[^A-Za-z0-9_-]/g, "_"); }

function modelCard(m, isDefault) {
  const unit = m.targets[0]?.unit || "";
  return h("section", { class: "model-card", id: cardId(m.ref), "aria-labelledby": `${cardId(m.ref)}-h`,
                        "data-ref": m.ref },
    h("h2", { id: `${cardId(m.ref)}-h` }, m.ref,
      isDefault ? h("span", { class: "badge yes" }, "default") : null,
      m.shipped ? h("span", { class: "badge" }, "shipped") : null,
      m.preliminary ? h("span", { class: "badge no" }, "preliminary") : null),
    h("p", { class: "muted" }, `registered ${when(m.created_at)} · voxel parameters ${m.params_hash}`),
    h("div", { class: "cols" },
      h("div", {}, h("h3", {}, "Targets"), targetsTable(m.targets),
        h("h3", {}, "Metrics"), metricsTable(m.metrics, unit)),
      h("div", {}, h("h3", {}, "Training data"), trainingData(m.training_data),
        h("h3", {}, "Energy grid"), voxelFacts(m.voxel_params))),
    h("h3", {}, "Figures"), modelImages(m.ref));
}

function targetsTable(targets) {
  if (!targets.length) return h("p", { class: "muted" }, "no targets on the card");
  return h("table", { class: "targets" },
    h("thead", {}, h("tr", {}, h("th", {}, "target"), h("th", {}, "property"), h("th", {}, "unit"))),
    h("tbody", {}, targets.map((t) => h("tr", {}, h("td", {}, h("code", {}, t.name)), h("td", {}, t.property || "–"),
      h("td", {}, t.unit || "–")))));
}

function metricsTable(metrics, unit) {
  const rows = metricRows(metrics);
  const measured = rows.filter((r) => r.metric);
  const other = rows.filter((r) => !r.metric);
  if (!rows.length) return h("p", { class: "muted" }, "no metrics on the card");
  return h("div", {},
    measured.length ? h("table", { class: "metrics" },
      h("caption", {}, "Values with 95 % bootstrap confidence intervals"),
      h("thead", {}, h("tr", {}, h("th", {}, "set"), h("th", {}, "metric"),
        h("th", { class: "num" }, "value [95 % CI]"))),
      h("tbody", {}, measured.map((r) => h("tr", {}, h("td", {}, r.group || "–"),
        h("td", {}, `${METRIC_LABELS[r.key] || r.key}${METRICS_WITH_UNIT.has(r.key) && unit ? ` (${unit})` : ""}`),
        h("td", { class: "num" }, metricText(r.metric)))))) : null,
    other.length ? facts(other.map((r) => [`${r.group ? `${r.group} · ` : ""}${r.key.replace(/_/g, " ")}`,
      typeof r.value === "number" ? num(r.value, 4) : String(r.value)])) : null);
}

function trainingData(data) {
  const pairs = Object.entries(data || {}).map(([key, value]) => {
    const label = key.replace(/_/g, " ");
    if (Array.isArray(value)) {
      if (value.length <= 6) return [label, value.join(", ")];
      return [label, `${value.length} entries (${value.slice(0, 3).join(", ")}, …)`];
    }
    if (value && typeof value === "object") return [label, JSON.stringify(value)];
    return [label, typeof value === "number" ? num(value, 6) : String(value)];
  });
  return pairs.length ? facts(pairs) : h("p", { class: "muted" }, "not recorded");
}

function voxelFacts(p) {
  const v = p || {};
  return facts([
    ["grid", v.grid_size ? `${v.grid_size}³ points` : null],
    ["cut-off", v.cutoff ? `${v.cutoff} Å` : null],
    ["probe", v.probe_epsilon ? `ε = ${v.probe_epsilon} K, σ = ${v.probe_sigma} Å` : null],
    ["temperature", v.temperature ? `${v.temperature} K` : null],
    ["values", v.boltzmann === false ? "energies V/k_B (K)" : "Boltzmann factors exp(−V/k_BT)"],
    ["box", v.cubic_box ? `${v.cubic_box} Å cube` : "minimum-image supercell"],
    ["force field", v.force_field],
  ]);
}
