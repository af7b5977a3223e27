"""GET /jobs/{id} and GET /jobs/{id}/results (JSON or CSV, paginated)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse

from app.api.deps import CallerDep, JobDep, SessionDep, SettingsDep, StoreDep
from app.db.tables import JobKind, JobStatus
from app.schemas import QUANTITY_PATTERN, JobList, JobPublic, ResultsPage
from app.services import jobs as jobs_service

router = APIRouter(prefix="/jobs", tags=["jobs"])

#: Bounds of the results pagination (SQL LIMIT/OFFSET stay far from 64-bit overflow).
MAX_LIMIT, MAX_OFFSET, DEFAULT_LIMIT = 10_000, 10_000_000, 100


@router.get("", response_model=JobList)
def list_jobs(
    session: SessionDep,
    caller: CallerDep,
    status: Annotated[JobStatus | None, Query(description="only jobs in this status")] = None,
    kind: Annotated[JobKind | None, Query(description="only jobs of this kind")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> JobList:
    """The caller's jobs (an admin key's: everyone's), newest first."""
    with session.begin():
        rows, total = jobs_service.list_jobs(session, caller, status=status, kind=kind, limit=limit, offset=offset)
        return JobList(data=[jobs_service.job_public(j) for j in rows], total=total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobPublic, responses={404: {"description": "unknown job"}})
def read_job(job: JobDep) -> JobPublic:
    """Status and progress of a job."""
    return jobs_service.job_public(job)


@router.post("/{job_id}/cancel", response_model=JobPublic,
             responses={404: {"description": "unknown job"}, 409: {"description": "the job already finished"}})
def cancel_job(job_id: str, session: SessionDep, caller: CallerDep) -> JobPublic:
    """Cancel a queued or running job: it and its unfinished items become `cancelled` (409 when already final)."""
    return jobs_service.job_public(jobs_service.cancel(session, job_id, caller))


@router.delete("/{job_id}", status_code=204, response_class=Response,
               responses={404: {"description": "unknown job"}})
def delete_job(job_id: str, session: SessionDep, store: StoreDep, caller: CallerDep) -> Response:
    """Delete a job, its results and its uploads (a running job is cancelled first)."""
    jobs_service.delete_job(session, store, job_id, caller)
    return Response(status_code=204)


@router.get("/{job_id}/results", response_model=ResultsPage,
            responses={200: {"content": {"text/csv": {}}}, 404: {"description": "unknown job"},
                       422: {"description": "a sort key this job's model does not give, or a bad parameter"}})
def read_results(
    job: JobDep,
    session: SessionDep,
    settings: SettingsDep,
    format: Annotated[Literal["json", "csv"], Query(description="json (default) or csv")] = "json",
    order: Annotated[Literal["desc", "asc", "input"], Query(description="by predicted value, or input order")] = "desc",
    limit: Annotated[int | None, Query(ge=1, le=MAX_LIMIT, description="items per page (JSON default 100; CSV "
                                                                       "default: every item)")] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items skipped")] = 0,
    sort: Annotated[str | None, Query(pattern=QUANTITY_PATTERN,
                                      description="rank by: value (default), or for a curve model uptake_<p>bar "
                                                  "(e.g. uptake_65bar) or deliverable_65_5.8bar")] = None,
) -> ResultsPage | Response:
    """Items with their predictions, best first; failed items last with their error.

    JSON is paginated; CSV streams every item (or ``limit`` from ``offset``), read in batches, in the same order.
    """
    with session.begin():
        outputs = jobs_service.job_outputs(session, job)
        outputs.check_sort(sort)  # a 422 before anything streams
    if format == "csv":
        rows = jobs_service.iter_results_csv(settings.db_url, job, order=order, offset=offset, limit=limit,
                                             sort=sort, outputs=outputs)
        return StreamingResponse(rows, media_type="text/csv",
                                 headers={"Content-Disposition": f'attachment; filename="results_{job.id}.csv"'})
    with session.begin():
        return jobs_service.results_page(session, job, limit=limit or DEFAULT_LIMIT, offset=offset, order=order,
                                         sort=sort)
