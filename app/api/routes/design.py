"""POST /design: rank known structures against a target uptake or isotherm → 202 with the job (poll GET /jobs/{id})."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from app.api.deps import CallerDep, IdempotencyKeyDep, SessionDep, SettingsDep
from app.api.responses import accepted_response
from app.schemas import DesignRequest, JobAccepted
from app.services import jobs as jobs_service
from app.services.design import submit_design

router = APIRouter(tags=["design"])


@router.post(
    "/design", status_code=202, response_model=JobAccepted,
    responses={400: {"description": "the body is not JSON"},
               422: {"description": "unknown model, a target quantity the model does not give, or bad "
                                    "tolerances/units"}},
)
async def create_design_job(request: DesignRequest, settings: SettingsDep, session: SessionDep,
                            idempotency_key: IdempotencyKeyDep, caller: CallerDep) -> JSONResponse:
    """Which structures come closest to this target? Ranks every structure you predicted with the model and the
    model's library of CoRE MOF 2019 predictions; the job's ``result.candidates`` hold the top ``top_k``, each
    with its predicted quantities, σ, applicability domain, distance and probability of lying within tolerance.
    """
    job_id = await run_in_threadpool(submit_design, session, settings, request, idempotency_key, caller=caller)
    return accepted_response(await run_in_threadpool(jobs_service.accepted, session, job_id))
