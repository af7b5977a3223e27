// GET /: upload (drop files, a folder or a zip), choose the model, follow the latest job, list the jobs.
import { api } from "../api.js";
import { designForm } from "../design.js";
import { h, replace } from "../dom.js";
import { FINAL } from "../format.js";
import { followJob } from "../jobview.js";
import { jobList } from "../joblist.js";
import { initPage } from "../layout.js";
import { storedUnits, storeUnits, unitChoices } from "../units.js";
import { acceptable, describeFiles, filesFromDrop, submissionKind, submit } from "../upload.js";

const $ = (id) => document.getElementById(id);
let chosen = [];
let current = null;
let modelUnits = {};  // ref → the unit of its first target

initPage();
const jobs = jobList($("job-list"));
loadModels();
document.addEventListener("retnet:key-changed", loadModels);

// --- the model choice --------------------------------------------------------------------------------------------

async function loadModels() {
  const select = $("model-select"), note = $("model-note");
  try {
    const answer = await api("/models");
    modelUnits = Object.fromEntries(answer.data.map((m) => [m.ref, m.targets[0]?.unit || ""]));
    replace(select, answer.data.map((m) => {
      const target = m.targets[0] || {};
      const label = `${m.ref} · ${target.property || target.name || "?"} (${target.unit || "?"})`
        + `${m.ref === answer.default ? " · default" : ""}${m.preliminary ? " · preliminary" : ""}`;
      return new Option(label, m.ref, false, m.ref === answer.default);
    }));
    if (!answer.data.length) {
      replace(select, new Option("no model registered", ""));
      replace(note, h("span", { class: "error" }, "No model is registered: train one (POST /training-jobs) first."));
    } else {
      replace(note, "Cards and figures of every model: ", h("a", { href: "/ui/models" }, "Models"), ".");
    }
    showUnits();
  } catch (err) {
    replace(select, new Option("(models unavailable)", ""));
    replace(note, h("span", { class: "error" }, `could not read the models: ${err.message}`));
  }
}

/** The units the chosen model's results can be given in (the last choice kept when it still applies). */
function showUnits() {
  const select = $("units-select");
  const choices = unitChoices(modelUnits[$("model-select").value]);
  replace(select, choices.map((c) => new Option(c.label, c.value)));
  select.value = choices.some((c) => c.value === storedUnits()) ? storedUnits() : choices[0].value;
}

$("model-select").addEventListener("change", showUnits);
$("units-select").addEventListener("change", (e) => storeUnits(e.target.value));

// --- choosing files ----------------------------------------------------------------------------------------------

function choose(files) {
  const { kept, ignored } = acceptable(files);
  chosen = kept;
  const button = $("submit-button"), selection = $("selection");
  $("clear-button").hidden = !kept.length;
  if (!kept.length) {
    button.disabled = true;
    button.textContent = "Choose files first";
    replace(selection, files.length ? h("p", { class: "error" }, "None of these files is a .cif or a .zip.") : "");
    return;
  }
  const kind = submissionKind(kept);
  button.disabled = false;
  button.textContent = kind === "predict" ? "Predict this structure"
    : kept.length === 1 ? "Screen the zip" : `Screen ${kept.length} files`;
  replace(selection, h("p", {}, describeFiles(kept), ignored.length ? h("span", { class: "warn" },
    ` — ${ignored.length} other file${ignored.length === 1 ? "" : "s"} left out`) : null),
  h("ul", {}, kept.slice(0, 50).map((f) => h("li", {}, f.webkitRelativePath || f.name)),
    kept.length > 50 ? h("li", { class: "muted" }, `… and ${kept.length - 50} more`) : null));
}

const zone = $("dropzone");
for (const type of ["dragenter", "dragover"]) {
  zone.addEventListener(type, (e) => { e.preventDefault(); zone.classList.add("over"); });
}
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", async (e) => {
  e.preventDefault();
  zone.classList.remove("over");
  choose(await filesFromDrop(e.dataTransfer));
});
zone.addEventListener("keydown", (e) => {  // the drop zone works from the keyboard too
  if (e.key === "Enter" || e.key === " ") {
    e.preventDefault();
    $("file-input").click();
  }
});
$("file-input").addEventListener("change", (e) => choose([...e.target.files]));
$("folder-input").addEventListener("change", (e) => choose([...e.target.files]));
$("clear-button").addEventListener("click", () => {
  $("file-input").value = "";
  $("folder-input").value = "";
  choose([]);
});

// --- sending them and following the job --------------------------------------------------------------------------

$("upload-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  if (!chosen.length) return;
  const status = $("upload-status"), button = $("submit-button");
  button.disabled = true;
  replace(status, `uploading ${describeFiles(chosen)}…`);
  try {
    const jobId = await submit(chosen, { model: $("model-select").value, units: $("units-select").value,
                                         name: $("screening-name").value.trim() });
    replace(status, h("span", { class: "ok" }, "submitted: "), h("a", { href: `/ui/jobs/${jobId}` }, `job ${jobId}`));
    follow(jobId);
    jobs.refresh();
    $("file-input").value = "";
    $("folder-input").value = "";
    choose([]);
  } catch (err) {
    replace(status, h("span", { class: "error" }, `not submitted: ${err.message}`));
    button.disabled = false;
  }
});

designForm($("design-form"), { onJob: (jobId) => { follow(jobId); jobs.refresh(); } });

function follow(jobId) {
  if (current) current.stop();
  $("current-section").hidden = false;
  let final = false;
  current = followJob($("current-job"), jobId, { heading: "h3", link: true, onUpdate: (job) => {
    if (!final && FINAL.has(job.status)) {  // the list shows the end at the same moment
      final = true;
      jobs.refresh();
    }
  } });
}
