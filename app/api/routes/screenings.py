"""POST /screenings: many CIFs (or one zip of CIFs) → 202 with the job id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from app.api.deps import IdempotencyKeyDep, SessionDep, SettingsDep, StoreDep
from app.api.responses import accepted_response
from app.schemas import JobAccepted
from app.services import jobs as jobs_service
from app.services.errors import BadRequestError, PayloadTooLargeError
from app.services.submit import Upload, submit_screening
from app.services.uploads import cifs_from_zip, is_zip_name, read_limited

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
    files: Annotated[list[UploadFile], File(description="CIF files, or one .zip of CIFs")],
    model: Annotated[str | None, Form(description="model name or name:version")] = None,
    name: Annotated[str | None, Form(max_length=200, description="a label for this screening")] = None,
) -> JSONResponse:
    """Screen many structures; poll GET /jobs/{job_id}, then GET /jobs/{job_id}/results."""
    if not files:
        raise BadRequestError("send CIF files in the 'files' field (or one .zip of CIFs)")
    uploads: list[Upload] = []
    for f in files:
        if is_zip_name(f.filename):
            data = await read_limited(f, settings.upload.max_zip_bytes, what="zip")
            members = await run_in_threadpool(cifs_from_zip, data, settings)
            uploads.extend(Upload(m.name, m.data) for m in members)
        else:
            # an empty CIF fails its own item (like an empty member of a zip), not the whole screening
            data = await read_limited(f, settings.upload.max_cif_bytes, what="CIF", allow_empty=True)
            uploads.append(Upload(f.filename or f"structure_{len(uploads)}.cif", data))
    if len(uploads) > settings.upload.max_files:
        raise PayloadTooLargeError(f"{len(uploads)} structures in one screening; the limit is "
                                   f"{settings.upload.max_files}")
    job_id = await run_in_threadpool(submit_screening, session, settings, store, uploads, model, name,
                                    idempotency_key)
    return accepted_response(await run_in_threadpool(jobs_service.accepted, session, job_id))
