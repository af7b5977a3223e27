"""GET /jobs/{id} and GET /jobs/{id}/results (JSON or CSV, paginated)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app.api.deps import JobDep, SessionDep
from app.schemas import JobPublic, ResultsPage
from app.services import jobs as jobs_service

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("/{job_id}", response_model=JobPublic, responses={404: {"description": "unknown job"}})
def read_job(job: JobDep) -> JobPublic:
    """Status and progress of a job."""
    return jobs_service.job_public(job)


@router.post("/{job_id}/cancel", response_model=JobPublic,
             responses={404: {"description": "unknown job"}, 409: {"description": "the job already finished"}})
def cancel_job(job_id: str, session: SessionDep) -> JobPublic:
    """Cancel a queued or running job: it and its unfinished items become `cancelled` (409 when already final)."""
    return jobs_service.job_public(jobs_service.cancel(session, job_id))


@router.get("/{job_id}/results", response_model=ResultsPage,
            responses={200: {"content": {"text/csv": {}}}, 404: {"description": "unknown job"}})
def read_results(
    job: JobDep,
    session: SessionDep,
    format: Annotated[Literal["json", "csv"], Query(description="json (default) or csv")] = "json",
    order: Annotated[Literal["desc", "asc", "input"], Query(description="by predicted value, or input order")] = "desc",
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ResultsPage | Response:
    """Items with their predictions, best first; failed items last with their error."""
    if format == "csv" and limit == 100:
        limit = 10000
    with session.begin():
        page = jobs_service.results_page(session, job, limit=limit, offset=offset, order=order)
    if format == "csv":
        return Response(jobs_service.results_csv(page), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="results_{job.id}.csv"'})
    return page
