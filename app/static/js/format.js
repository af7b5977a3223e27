// Numbers, times and metrics as a chemist reads them.

/** A number with ``digits`` significant digits (3 by default); "–" for null. */
export function num(x, digits = 3) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  if (!Number.isFinite(x)) return x > 0 ? "∞" : "−∞";
  if (x === 0) return "0";
  const abs = Math.abs(x);
  if (abs >= 1e5 || abs < 1e-3) return x.toExponential(digits - 1).replace("-", "−");
  return Number(x.toPrecision(digits)).toLocaleString("en-US", { maximumFractionDigits: 10 }).replace("-", "−");
}

/** A fixed number of decimals (metrics: R² 0.840). */
export function fixed(x, decimals = 3) {
  if (x === null || x === undefined || !Number.isFinite(x)) return "–";
  return x.toFixed(decimals).replace("-", "−");
}

/** Milliseconds: "8.9 ms", "1.24 s". */
export function ms(x) {
  if (x === null || x === undefined) return "–";
  return x < 1000 ? `${num(x, 2)} ms` : `${num(x / 1000, 3)} s`;
}

/** Seconds as "42 s", "3 min 5 s", "1 h 2 min". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** A server timestamp as local date and time (2024-05-01 14:03:22). */
export function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} `
    + `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Labels of the regression metrics the cards carry; MAE/RMSE are in the target's unit. */
export const METRIC_LABELS = { r2: "R²", mae: "MAE", rmse: "RMSE", spearman: "Spearman ρ", coverage: "coverage" };
export const METRICS_WITH_UNIT = new Set(["mae", "rmse"]);

/** True for a metric entry {value, ci_low, ci_high}. */
export function isMetric(x) {
  return x !== null && typeof x === "object" && !Array.isArray(x) && "value" in x
    && (typeof x.value === "number" || x.value === null);
}

/** "0.840 [0.780, 0.887]" (the CI only when it is a real interval). */
export function metricText(m, decimals = 3) {
  if (!isMetric(m) || m.value === null) return "–";
  const low = m.ci_low, high = m.ci_high;
  const ci = Number.isFinite(low) && Number.isFinite(high) && low !== high
    ? ` [${fixed(low, decimals)}, ${fixed(high, decimals)}]` : "";
  return `${fixed(m.value, decimals)}${ci}`;
}

/**
 * Flatten a card's ``metrics`` into rows {group, key, metric} (metric entries at any depth, e.g. ``test.r2`` of
 * the shipped model or ``ch4.mae`` of a multi-target one) and {group, key, value} for other scalars.
 */
export function metricRows(metrics, group = "") {
  const rows = [];
  for (const [key, value] of Object.entries(metrics || {})) {
    if (isMetric(value)) rows.push({ group, key, metric: value });
    else if (value && typeof value === "object" && !Array.isArray(value)) {
      rows.push(...metricRows(value, group ? `${group} · ${key}` : key));
    } else if (value !== null && value !== undefined && typeof value !== "object") {
      rows.push({ group, key, value });
    }
  }
  return rows;
}

/** Human words for job states. */
export const STATUS_WORDS = {
  queued: "queued", running: "running", succeeded: "finished", failed: "failed", cancelled: "cancelled",
};
export const FINAL = new Set(["succeeded", "failed", "cancelled"]);
