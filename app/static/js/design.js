// Inverse design: the form that asks POST /design (which known structures come closest to a target?) and the
// ranked candidates of a design job.
import { api, downloadLink, loadImage } from "./api.js";
import { h, replace } from "./dom.js";
import { num } from "./format.js";
import { sortableTable } from "./table.js";
import { unitLabel } from "./units.js";

const DELIVERABLE = "deliverable_65_5.8bar";

/** The quantities a model can be asked for: ``value``, or a curve model's points and deliverable capacity. */
export function designQuantities(model) {
  const targets = model?.targets || [];
  const pressures = targets.map((t) => t.pressure_bar);
  const curve = targets.length > 1 && pressures.every((p) => Number.isFinite(p))
    && pressures.every((p, i) => i === 0 || p > pressures[i - 1]);
  if (!curve) {
    const t = targets[model?.primary_output || 0] || targets[0] || {};
    return [{ key: "value", label: t.property || t.name || "value" }];
  }
  const out = pressures.map((p) => ({ key: `uptake_${fmtPressure(p)}bar`, label: `uptake at ${fmtPressure(p)} bar` }));
  if (pressures.includes(65) && pressures.includes(5.8)) {
    out.push({ key: DELIVERABLE, label: "deliverable capacity 65 → 5.8 bar" });
  }
  return out;
}

function fmtPressure(p) {
  return String(Number(p.toPrecision(6)));  // as Python's :g for these pressures (1, 5.8, 35, 65)
}

/** The design form in ``form`` (fields by id: design-model, design-quantities, …); ``onJob(jobId)`` follows it. */
export function designForm(form, { onJob }) {
  const $ = (id) => form.querySelector(`#${id}`);
  let models = [];

  async function load() {
    try {
      const answer = await api("/models");
      models = answer.data;
      replace($("design-model"), models.map((m) => new Option(`${m.ref}${m.ref === answer.default ? " · default" : ""}`,
                                                            m.ref, false, m.targets.length > 1)));
      if (!models.some((m) => m.targets.length > 1)) $("design-model").value = answer.default || "";
      fields();
    } catch (err) {
      replace($("design-status"), h("span", { class: "error" }, `could not read the models: ${err.message}`));
    }
  }

  function fields() {
    const model = models.find((m) => m.ref === $("design-model").value);
    const unit = unitLabel($("design-units").value);
    replace($("design-quantities"), designQuantities(model).map((q) => h("label", { for: `design-q-${q.key}` },
      `${q.label} (${unit})`, h("input", { id: `design-q-${q.key}`, "data-quantity": q.key, type: "number",
                                          step: "any", min: "0", placeholder: "leave empty to ignore" }))));
  }

  form.addEventListener("change", (e) => {
    if (e.target.id === "design-model" || e.target.id === "design-units") fields();
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const target = {};
    for (const input of form.querySelectorAll("[data-quantity]")) {
      if (input.value.trim() !== "") target[input.dataset.quantity] = Number(input.value);
    }
    const status = $("design-status");
    if (!Object.keys(target).length) {
      replace(status, h("span", { class: "error" }, "Give at least one target value."));
      return;
    }
    const body = { model: $("design-model").value || null, target, tolerance: Number($("design-tolerance").value),
                   units: $("design-units").value, top_k: Number($("design-top").value) || 10,
                   in_domain_only: $("design-in-domain").checked,
                   generate: Number($("design-generate")?.value) || 0 };
    try {
      const answer = await api("/design", { method: "POST", body: JSON.stringify(body),
                                            headers: { "Content-Type": "application/json" } });
      replace(status, h("span", { class: "ok" }, "submitted: "),
        h("a", { href: `/ui/jobs/${answer.job_id}` }, `job ${answer.job_id}`));
      onJob(answer.job_id);
    } catch (err) {
      replace(status, h("span", { class: "error" }, `not submitted: ${err.message}`));
    }
  });
  load();
  document.addEventListener("retnet:key-changed", load);
}

/** The ranked candidates of a design job, in ``container``. */
export function designView(container) {
  return {
    refresh(job) {
      const result = job.result;
      if (!result) {
        replace(container, h("p", { class: "muted" }, "ranking the structures…"));
        return;
      }
      const unit = unitLabel(result.units);
      const quantities = Object.keys(result.target || {});
      const tol = (q) => (typeof result.tolerance === "number" ? result.tolerance : result.tolerance[q]);
      const columns = [
        { key: "rank", label: "Rank", numeric: true, value: (c) => c.rank },
        { key: "name", label: "Structure", value: (c) => c.name, rowHeader: true },
        { key: "source", label: "From", value: (c) => (c.source === "library" ? "CoRE MOF library" : "your predictions") },
        ...quantities.map((q) => ({
          key: q, label: q, unit, numeric: true, value: (c) => c.predicted[q],
          cell: (c) => `${num(c.predicted[q], 4)}${c.uncertainty ? ` ± ${num(c.uncertainty[q], 2)}` : ""}`,
        })),
        { key: "distance", label: "Distance", unit, numeric: true, value: (c) => c.distance, cell: (c) => num(c.distance, 3) },
        { key: "within", label: "Within tolerance", value: (c) => (c.within_tolerance ? "yes" : "no") },
        { key: "p_within", label: "P(within)", numeric: true, descendingFirst: true, value: (c) => c.p_within,
          cell: (c) => (Number.isFinite(c.p_within) ? `${Math.round(100 * c.p_within)} %` : "–") },
        { key: "in_domain", label: "Applicability", value: (c) => (c.in_domain === true ? "in domain"
          : c.in_domain === false ? "outside" : null) },
      ];
      const table = sortableTable({ columns, rows: result.candidates, id: "design-table",
                                    caption: "Nearest structures to the target, best first",
                                    rowClass: (c) => (c.within_tolerance ? "hit" : null) });
      const wanted = quantities.map((q) => `${q} = ${num(result.target[q], 4)} ± ${num(tol(q), 3)} ${unit}`).join(", ");
      replace(container,
        h("p", { class: "design-summary" }, `Target: ${wanted}. `, `${result.ranked} structures ranked `
          + `(${result.sources.service} you predicted, ${result.sources.library} from the CoRE MOF library); `
          + `${result.within_tolerance} of the top ${result.candidates.length} within tolerance.`),
        table.element,
        h("p", { class: "muted" }, "P(within): the probability that every true value lies within tolerance, "
          + "from each prediction's calibrated σ. Check a candidate with GCMC (retnet simulate) before making it."),
        designedLandscapes(result, quantities));
    },
  };
}

/** The generator's designed energy landscapes of a design result: picture, predicted values, nearest real MOFs. */
function designedLandscapes(result, quantities) {
  if (!Array.isArray(result.designed)) return null;
  if (!result.designed.length) return h("p", { class: "muted" }, `No landscape designed: ${result.designed_note}`);
  return h("section", { class: "designed" }, h("h4", {}, "Designed energy landscapes (generator)"),
    h("p", { class: "muted" }, result.designed_note),
    result.designed.map((d) => {
      const img = h("img", { class: "grid-image", alt: `designed landscape ${d.index + 1}: three mid slices` });
      loadImage(img, d.picture);
      const values = quantities.map((q) => `${q} = ${num(d.predicted[q], 4)}`
        + `${d.uncertainty ? ` ± ${num(d.uncertainty[q], 2)}` : ""} ${result.units || "mol/kg"}`).join(", ");
      const density = d.density_g_cm3 == null ? "" : ` at a crystal density of ${num(d.density_g_cm3, 3)} g/cm³`;
      return h("figure", { class: "designed-landscape", "data-index": d.index }, img,
        h("figcaption", {}, `Landscape ${d.index + 1}: ${values}${density}`,
          d.in_domain === false ? " (outside the applicability domain)" : "", ". Nearest real structures: ",
          d.nearest.map((n) => `${n.name} (${num(n.distance, 3)})`).join(", "), ". ",
          downloadLink(d.grid, `design_${d.index}.npy`, "grid (.npy)")));
    }));
}
