// GET /ui/jobs/{id}: one job, polled until final (prediction card, ranked results or training curves).
import { followJob } from "../jobview.js";
import { initPage } from "../layout.js";

const jobId = document.getElementById("job-page").dataset.jobId;
let view = null;

function show() {
  if (view) view.stop();
  view = followJob(document.getElementById("job"), jobId, { heading: "h1",
    onUpdate: (job) => { document.title = `${job.name || job.kind} ${job.id.slice(0, 8)} · RetNet Service`; } });
}

initPage();
document.addEventListener("retnet:key-changed", show);
show();
