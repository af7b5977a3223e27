// Small inline-SVG line charts (isotherms, training curves): axes with round ticks, a legend, ±σ error bars.
import { s } from "./dom.js";
import { num } from "./format.js";

export const COLORS = ["#1f5fa8", "#d9730d", "#2e8540", "#8e44ad", "#b3261e"];

/**
 * @param {object} spec
 * @param {Array<{name: string, points: Array<{x: number, y: number, err?: number}>, color?: string,
 *                dashed?: boolean}>} spec.series
 * @param {string} spec.xLabel  axis label with its unit, e.g. "pressure (bar)"
 * @param {string} spec.yLabel
 * @param {string} spec.title   the chart's accessible name
 * @param {boolean} [spec.yLog] logarithmic y axis (when every y is positive)
 * @param {number} [spec.yMin]  lower bound of the y axis (values below are clipped)
 * @param {boolean} [spec.zeroX] start the x axis at 0 (pressures); ``zeroY`` likewise for y
 * @param {boolean} [spec.integerX] whole-number x ticks only (epochs)
 * @returns {SVGSVGElement}
 */
export function lineChart({ series, xLabel, yLabel, title, width = 560, height = 300, yLog = false, yMin = null,
                            zeroX = false, zeroY = false, integerX = false }) {
  const margin = { top: 14, right: 16, bottom: 62, left: 64 };
  const plotW = width - margin.left - margin.right, plotH = height - margin.top - margin.bottom;
  const points = series.flatMap((sr) => sr.points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y)));
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
                         "aria-label": title }, s("title", {}, title));
  if (!points.length) {
    svg.append(s("text", { x: width / 2, y: height / 2, "text-anchor": "middle" }, "no data yet"));
    return svg;
  }
  const xs = points.map((p) => p.x);
  let ys = points.flatMap((p) => (Number.isFinite(p.err) ? [p.y - p.err, p.y + p.err] : [p.y]));
  if (yMin !== null) ys = ys.map((y) => Math.max(y, yMin));
  const log = yLog && ys.every((y) => y > 0);
  const [x0, x1] = padded(Math.min(...xs), Math.max(...xs), zeroX);
  let [y0, y1] = log ? [Math.min(...ys), Math.max(...ys)] : padded(Math.min(...ys), Math.max(...ys), zeroY);
  if (log && y0 === y1) { y0 /= 2; y1 *= 2; }
  if (log) { y0 /= 1.1; y1 *= 1.1; }
  if (yMin !== null) y0 = Math.max(y0, yMin);
  const fy = log ? (y) => Math.log10(y) : (y) => y;
  const sx = (x) => margin.left + ((x - x0) / (x1 - x0)) * plotW;
  const sy = (y) => margin.top + plotH - ((fy(Math.max(y, yMin ?? -Infinity)) - fy(y0)) / (fy(y1) - fy(y0))) * plotH;

  const grid = s("g", { class: "grid" }), axis = s("g", { class: "axis" });
  for (const t of ticks(x0, x1, 6).filter((v) => !integerX || Number.isInteger(v))) {
    grid.append(s("line", { x1: sx(t), x2: sx(t), y1: margin.top, y2: margin.top + plotH }));
    axis.append(s("text", { x: sx(t), y: margin.top + plotH + 16, "text-anchor": "middle" }, num(t)));
  }
  for (const t of (log ? logTicks(y0, y1) : ticks(y0, y1, 5)).filter((v) => v >= y0 && v <= y1)) {
    grid.append(s("line", { x1: margin.left, x2: margin.left + plotW, y1: sy(t), y2: sy(t) }));
    axis.append(s("text", { x: margin.left - 6, y: sy(t) + 4, "text-anchor": "end" }, num(t)));
  }
  axis.append(s("path", { d: `M${margin.left},${margin.top}V${margin.top + plotH}H${margin.left + plotW}`,
                          fill: "none" }));
  axis.append(s("text", { x: margin.left + plotW / 2, y: margin.top + plotH + 34, "text-anchor": "middle" }, xLabel));
  axis.append(s("text", { x: 14, y: margin.top + plotH / 2, "text-anchor": "middle",
                          transform: `rotate(-90 14 ${margin.top + plotH / 2})` }, yLabel));
  svg.append(grid, axis);

  const legend = s("g", { class: "legend" });
  let legendX = margin.left;
  series.forEach((sr, i) => {
    const color = sr.color || COLORS[i % COLORS.length];
    const pts = sr.points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y)).sort((a, b) => a.x - b.x);
    const g = s("g", { class: "series", "data-name": sr.name });
    if (pts.length) {
      const d = pts.map((p, j) => `${j ? "L" : "M"}${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join("");
      g.append(s("path", { d, stroke: color, "stroke-dasharray": sr.dashed ? "5 4" : null }));
      for (const p of pts) {
        if (Number.isFinite(p.err) && p.err > 0) {
          g.append(s("line", { x1: sx(p.x), x2: sx(p.x), y1: sy(p.y - p.err), y2: sy(p.y + p.err), stroke: color }));
        }
        if (pts.length <= 60) {
          g.append(s("circle", { cx: sx(p.x), cy: sy(p.y), r: 3, fill: color },
            s("title", {}, `${sr.name}: ${num(p.x)}, ${num(p.y)}${Number.isFinite(p.err) ? ` ± ${num(p.err)}` : ""}`)));
        }
      }
    }
    svg.append(g);
    const ly = height - 12;
    legend.append(s("line", { x1: legendX, x2: legendX + 18, y1: ly - 4, y2: ly - 4, stroke: color, "stroke-width": 2,
                              "stroke-dasharray": sr.dashed ? "5 4" : null }),
                  s("text", { x: legendX + 22, y: ly }, sr.name));
    legendX += 34 + 7 * sr.name.length;
  });
  svg.append(legend);
  return svg;
}

function padded(lo, hi, zero) {
  if (zero) lo = Math.min(lo, 0);
  if (lo === hi) return [lo - (Math.abs(lo) || 1) * 0.5, hi + (Math.abs(hi) || 1) * 0.5];
  const pad = (hi - lo) * 0.05;
  return [zero && lo === 0 ? 0 : lo - pad, hi + pad];
}

/** Round tick values between lo and hi (about ``count`` of them). */
export function ticks(lo, hi, count) {
  const step0 = (hi - lo) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => st >= step0) || step0;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Number(t.toPrecision(12)));
  return out;
}

function logTicks(lo, hi) {
  const out = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const t = m * 10 ** e;
      if (t >= lo && t <= hi) out.push(t);
    }
  }
  return out.length >= 3 ? out : ticks(lo, hi, 4).filter((t) => t > 0);  // a narrow range: round linear values
}
