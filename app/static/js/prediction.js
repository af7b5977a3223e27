// One structure's prediction: value ± σ with unit, model, applicability domain, nearest training structures,
// timings, the isotherm of a curve model and the picture of its energy grid.
import { loadImage } from "./api.js";
import { lineChart } from "./chart.js";
import { facts, h } from "./dom.js";
import { ms, num } from "./format.js";
import { labelUnit, unitLabel } from "./units.js";

/** ``prediction.values`` of an isotherm model: a list of {pressure_bar, value, uncertainty}. */
export function isIsotherm(values) {
  return Array.isArray(values) && values.length > 0 && values.every((p) => p && Number.isFinite(p.pressure_bar));
}

/**
 * The card of one item (a ``PredictionResult``): the prediction, or the error in words.
 * @param {object} result
 * @param {object} [options] ``heading``: h2/h3; ``grid``: draw the energy grid (default true)
 */
export function predictionCard(result, { heading = "h3", grid = true } = {}) {
  const structure = result.structure || {};
  const title = structure.name || result.name || "structure";
  const card = h("article", { class: "prediction panel", "aria-label": `prediction for ${title}` });
  card.append(h(heading, {}, title, structure.formula
    ? h("small", {}, ` · ${structure.formula}, ${structure.n_atoms} atoms` ) : null));
  const p = result.prediction;
  if (!p) {
    const status = result.status === "failed" ? "could not be predicted" : `is ${result.status}`;
    card.append(h("p", { class: result.status === "failed" ? "error" : "muted", role: "status" },
      `${result.name || title} ${status}${result.error ? `: ${result.error}` : "."}`));
    return card;
  }
  const unit = unitLabel(p.unit);
  const sigma = Number.isFinite(p.uncertainty) ? p.uncertainty : null;
  const t = result.timings || {};
  const main = h("div", { class: "prediction-main" },
    h("p", { class: "value", "data-testid": "prediction-value" },
      h("span", { class: "number" }, num(p.value, 4)),
      sigma !== null ? h("span", { class: "sigma" }, ` ± ${num(sigma, 2)}`) : null,
      " ", h("span", { class: "unit" }, unit)),
    h("p", {}, p.property),
    facts([
      ["Model", p.model],
      ["Uncertainty", sigma !== null ? `σ = ${num(sigma, 2)} ${unit} (one standard deviation, calibrated)` : null],
      ["Applicability", domainText(p.in_domain)],
      ["Timings", [`parse ${ms(t.parse_ms)}`, `voxelize ${ms(t.voxelize_ms)}`, `inference ${ms(t.inference_ms)}`]
        .join(" · ") + (t.cache_hit ? " (grid from the cache)" : "")],
      ["File", result.name],
      ["sha256", structure.sha256 ? h("code", { title: structure.sha256 }, `${structure.sha256.slice(0, 16)}…`)
        : null],
    ]));
  const side = h("div", { class: "prediction-side" });
  if (Array.isArray(p.neighbours) && p.neighbours.length) side.append(neighboursTable(p, title));
  if (p.values && typeof p.values === "object" && !Array.isArray(p.values)) side.append(outputsTable(p));
  card.append(h("div", { class: "prediction-cols" }, main, side));
  if (isIsotherm(p.values)) card.append(isothermFigure(p, title));
  if (grid && structure.sha256) card.append(gridFigure(structure.sha256, p.model, title));
  return card;
}

function domainText(inDomain) {
  if (inDomain === true) return h("span", { class: "badge yes" }, "in domain: like the training structures");
  if (inDomain === false) {
    return h("span", { class: "badge no" }, "outside the domain: unlike the training structures, trust less");
  }
  return null;
}

function isothermFigure(p, title) {
  const unit = unitLabel(p.unit);
  const points = p.values.map((pt) => ({ x: pt.pressure_bar, y: pt.value,
                                         err: Number.isFinite(pt.uncertainty) ? pt.uncertainty : undefined }));
  const figure = h("figure", { class: "isotherm" },
    lineChart({ series: [{ name: `${title} (predicted)`, points }], xLabel: "pressure (bar)",
                yLabel: `uptake (${unit})`, title: `predicted isotherm of ${title}`, zeroX: true,
                zeroY: true }),
    h("figcaption", {}, "Predicted isotherm; bars: ±σ where the model gives one."));
  const rows = p.values.map((pt) => h("tr", {}, h("td", { class: "num" }, num(pt.pressure_bar)),
    h("td", { class: "num" }, num(pt.value, 4)),
    h("td", { class: "num" }, num(pt.uncertainty, 2))));
  figure.append(h("details", {}, h("summary", {}, "isotherm as a table"),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", { class: "num" }, "pressure (bar)"),
      h("th", { class: "num" }, `uptake (${unit})`), h("th", { class: "num" }, `σ (${unit})`))),
    h("tbody", {}, rows))));
  return figure;
}

function outputsTable(p) {
  return h("table", { class: "outputs" }, h("caption", {}, `Every output of this model (${unitLabel(p.unit)})`),
    h("thead", {}, h("tr", {}, h("th", {}, "output"), h("th", { class: "num" }, "value"))),
    h("tbody", {}, Object.entries(p.values).map(([name, v]) => h("tr", {}, h("td", {}, name),
      h("td", { class: "num" }, num(typeof v === "number" ? v : v?.value, 4))))));
}

function neighboursTable(p, title) {
  const unit = unitLabel(labelUnit(p));
  return h("table", { class: "neighbours" },
    h("caption", {}, `Nearest training structures of ${title} (distance in the model's fingerprint space)`),
    h("thead", {}, h("tr", {}, h("th", {}, "structure"), h("th", { class: "num" }, "distance"),
      h("th", { class: "num" }, `training label (${unit})`))),
    h("tbody", {}, p.neighbours.map((n) => h("tr", {}, h("td", {}, n.name), h("td", { class: "num" }, num(n.distance)),
      h("td", { class: "num" }, num(n.label, 4))))));
}

/** The three mid slices of a structure's energy grid (GET /structures/{sha}/grid.png, sent with the key). */
export function gridFigure(sha256, model, title) {
  const img = h("img", { alt: `Energy grid of ${title}: three orthogonal slices through the middle of the cell`,
                         width: 1050, height: 380, class: "grid-image" });
  const figure = h("figure", { class: "grid" }, img,
    h("figcaption", {}, "Energy grid (the model's input): Boltzmann factor exp(−V/k_BT) of the probe on the "
      + "middle slice along each cell axis; bright = attractive pore, dark = framework."));
  loadImage(img, `/structures/${encodeURIComponent(sha256)}/grid.png?model=${encodeURIComponent(model)}`);
  return figure;
}
