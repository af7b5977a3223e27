// Files a user gives the dashboard: dropped files, dropped folders (walked recursively), a chosen folder or zip.
// One CIF goes to POST /predict; several files, a folder or any zip to POST /screenings.
import { api } from "./api.js";

const ACCEPTED = /\.(cif|zip)$/i;

/** Keep CIFs and zips (anything else in a dropped folder is left out, and counted). */
export function acceptable(files) {
  const kept = [], ignored = [];
  for (const f of files) (ACCEPTED.test(f.name) ? kept : ignored).push(f);
  return { kept, ignored };
}

/** Every file of a drop: folders are walked (``webkitGetAsEntry``); plain file lists are taken as they are. */
export async function filesFromDrop(dataTransfer) {
  const entries = [...(dataTransfer.items || [])]
    .filter((item) => item.kind === "file")
    .map((item) => (item.webkitGetAsEntry ? item.webkitGetAsEntry() : null));
  if (!entries.length || entries.some((e) => !e)) return [...(dataTransfer.files || [])];
  const out = [];
  for (const entry of entries) await walk(entry, out);
  return out;
}

async function walk(entry, out) {
  if (entry.isFile) {
    out.push(await new Promise((resolve, reject) => entry.file(resolve, reject)));
    return;
  }
  if (!entry.isDirectory) return;
  const reader = entry.createReader();
  for (;;) {  // readEntries answers in batches (100 in Chrome) until an empty one
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (!batch.length) break;
    for (const child of batch) await walk(child, out);
  }
}

/** "predict" for exactly one CIF, else "screening". */
export function submissionKind(files) {
  return files.length === 1 && /\.cif$/i.test(files[0].name) ? "predict" : "screening";
}

/**
 * Send the files (with the model and the ``units`` of the results): returns the job id. ``wait=0`` on /predict answers at once (202, or 200 for a cached
 * prediction); the page follows the job either way.
 */
export async function submit(files, { model = "", name = "", units = "" } = {}) {
  const form = new FormData();
  if (model) form.append("model", model);
  if (units) form.append("units", units);
  if (submissionKind(files) === "predict") {
    form.append("file", files[0], files[0].name);
    form.append("wait", "0");
    try {
      const answer = await api("/predict", { method: "POST", body: form });
      return answer.job_id;
    } catch (err) {
      // A structure the service refuses (422) still made a failed job: show it with its reason.
      if (err.body && err.body.job_id) return err.body.job_id;
      throw err;
    }
  }
  for (const f of files) form.append("files", f, f.webkitRelativePath || f.name);
  if (name) form.append("name", name);
  const answer = await api("/screenings", { method: "POST", body: form });
  return answer.job_id;
}

/** "10 files (9 CIF, 1 zip), 412 kB". */
export function describeFiles(files) {
  const cifs = files.filter((f) => /\.cif$/i.test(f.name)).length;
  const zips = files.length - cifs;
  const bytes = files.reduce((a, f) => a + f.size, 0);
  const size = bytes < 1e6 ? `${Math.max(1, Math.round(bytes / 1e3))} kB` : `${(bytes / 1e6).toFixed(1)} MB`;
  const kinds = [cifs ? `${cifs} CIF` : null, zips ? `${zips} zip` : null].filter(Boolean).join(", ");
  return `${files.length} file${files.length === 1 ? "" : "s"} (${kinds}), ${size}`;
}
