"""POST /predict: one CIF → 200 with the prediction when ready within ``wait`` s, else 202 with the job."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from app.api.deps import CallerDep, IdempotencyKeyDep, SessionDep, SettingsDep, StoreDep, UnitsForm
from app.api.errors import failed_job_response
from app.api.responses import accepted_response
from app.db.tables import FINAL, JobStatus
from app.schemas import JobAccepted, PredictionResult
from app.services import jobs as jobs_service
from app.services.errors import BadRequestError, UnprocessableError
from app.services.submit import submit_prediction
from app.services.uploads import file_upload, is_zip_name, safe_filename, spooled_file

router = APIRouter(tags=["predict"])

MAX_WAIT_S = 600.0


@router.post(
    "/predict",
    response_model=PredictionResult,
    responses={202: {"model": JobAccepted, "description": "not ready within `wait`: poll GET /jobs/{job_id}"},
               400: {"description": "empty file"}, 413: {"description": "file over the size limit"},
               422: {"description": "not a CIF, invalid structure or unknown model"},
               500: {"description": "the model failed to load or to predict (`detail`, `job_id`)"},
               503: {"description": "no model registered, or a dependency failed the job (`detail`, `job_id`)"}},
)
async def predict(
    settings: SettingsDep,
    session: SessionDep,
    store: StoreDep,
    idempotency_key: IdempotencyKeyDep,
    caller: CallerDep,
    file: Annotated[UploadFile, File(description="one CIF file")],
    model: Annotated[str | None, Form(description="model name or name:version (default: the default model)")] = None,
    wait: Annotated[float, Form(ge=0, le=MAX_WAIT_S, description="seconds to wait for the result")] = 30.0,
    units: UnitsForm = "mol/kg",
) -> PredictionResult | JSONResponse:
    """Predict the adsorption property of one structure."""
    if is_zip_name(file.filename):
        raise BadRequestError("POST /predict takes one CIF; send zips of CIFs to POST /screenings")
    # hashed and stored from the spooled file in chunks: 20 concurrent 20 MB uploads do not sit in memory
    spooled = spooled_file(file, settings.upload.max_cif_bytes, what="CIF")
    name = safe_filename(file.filename, default="structure.cif")

    def submit_and_load() -> tuple[Any, Any]:
        # One hop to the thread pool for the whole fast path (a prediction-cache hit is final at once).
        upload = file_upload(spooled, name)
        job_id = submit_prediction(session, settings, store, upload, model, idempotency_key, caller=caller,
                                   units=units)
        return _load(session, job_id)

    job, item = await run_in_threadpool(submit_and_load)
    job_id = job.id
    deadline = time.monotonic() + wait
    delay = 0.005
    while True:
        if job.status in FINAL or time.monotonic() >= deadline:
            break
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.02)
        job, item = await run_in_threadpool(_load, session, job_id)
    if job.status in FINAL and item is not None:
        result = jobs_service.item_result(item, jobs_service.job_units(job))
        if result.prediction is None and item.error_code == "structure":
            raise UnprocessableError(result.error or "invalid structure")
        if result.prediction is None and result.status == JobStatus.failed:  # the model or the service failed
            return failed_job_response(result.error, job_id=job.id, item_id=result.item_id)
        return result
    return accepted_response(jobs_service.job_accepted(job))


def _load(session, job_id):  # type: ignore[no-untyped-def]
    session.expire_all()
    with session.begin():
        job = jobs_service.get_job(session, job_id)
        item = jobs_service.first_item(session, job_id) if job.status in FINAL else None
        return job, item
