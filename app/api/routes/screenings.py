"""POST /screenings: many CIFs (or one zip of CIFs) → 202 with the job id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from app.api.deps import CallerDep, IdempotencyKeyDep, SessionDep, SettingsDep, StoreDep, UnitsForm
from app.api.responses import accepted_response
from app.schemas import JobAccepted
from app.services import jobs as jobs_service
from app.services.errors import BadRequestError
from app.services.submit import check_model, submit_screening
from app.services.uploads import (
    MemberBudget,
    StoredUpload,
    check_zip,
    is_zip_name,
    safe_filename,
    spooled_file,
    store_spooled,
    store_zip_cifs,
)

router = APIRouter(tags=["screenings"])


@router.post(
    "/screenings", status_code=202, response_model=JobAccepted,
    responses={400: {"description": "empty zip, corrupt zip or unsafe zip path"},
               413: {"description": "upload over the size limit"},
               422: {"description": "zip without CIFs or unknown model"}, 503: {"description": "no model registered"}},
)
async def create_screening(
    settings: SettingsDep,
    session: SessionDep,
    store: StoreDep,
    idempotency_key: IdempotencyKeyDep,
    caller: CallerDep,
    files: Annotated[list[UploadFile], File(min_length=1, description="CIF files, or one .zip of CIFs")],
    model: Annotated[str | None, Form(description="model name or name:version")] = None,
    name: Annotated[str | None, Form(max_length=200, description="a label for this screening")] = None,
    units: UnitsForm = "mol/kg",
) -> JSONResponse:
    """Screen many structures; poll GET /jobs/{job_id}, then GET /jobs/{job_id}/results."""
    if not files:
        raise BadRequestError("send CIF files in the 'files' field (or one .zip of CIFs)")
    # before anything is stored: the zips' central directories (counts, sizes, ratios, paths), then the model
    declared = MemberBudget(settings.upload)
    for f in files:
        if is_zip_name(f.filename):
            await run_in_threadpool(check_zip, spooled_file(f, settings.upload.max_zip_bytes, what="zip"), settings,
                                    declared)
        else:
            declared.add_files()
    await run_in_threadpool(check_model, session, settings, model, caller, units)
    # each file, each zip member, is stored as soon as it is read: one CIF in memory at a time; the structure
    # count and the real expanded bytes are checked again while reading (``budget``: headers can lie)
    budget = MemberBudget(settings.upload)
    uploads: list[StoredUpload] = []
    for f in files:
        if is_zip_name(f.filename):
            archive = spooled_file(f, settings.upload.max_zip_bytes, what="zip")
            uploads += await run_in_threadpool(store_zip_cifs, archive, settings, store, budget)
        else:
            budget.add_files()
            # an empty CIF fails its own item (like an empty member of a zip), not the whole screening
            fh = spooled_file(f, settings.upload.max_cif_bytes, what="CIF", allow_empty=True)
            filename = safe_filename(f.filename, default=f"structure_{len(uploads)}.cif")
            uploads.append(await run_in_threadpool(store_spooled, store, fh, filename))
    job_id = await run_in_threadpool(submit_screening, session, settings, store, uploads, model, name,
                                    idempotency_key, caller=caller, units=units)
    return accepted_response(await run_in_threadpool(jobs_service.accepted, session, job_id))
