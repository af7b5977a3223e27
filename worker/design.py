"""``inference.design``: run a design job (rank known structures against a target) and store its result."""

from __future__ import annotations

import logging

from app.db.session import session_scope
from app.db.tables import FINAL, Job
from app.services import progress
from app.services.design import design_candidates
from worker.runtime import WorkerContext

log = logging.getLogger(__name__)


def run_design(ctx: WorkerContext, job_id: str) -> None:
    """Rank, then mark the job succeeded with its candidates; a non-transient error fails it with the reason."""
    with session_scope(ctx.db_url) as session:
        job = session.get(Job, job_id)
        if job is None or job.status in FINAL:
            return
        progress.start_job(session, job_id)
    try:
        with session_scope(ctx.db_url) as session:
            job = session.get(Job, job_id)
            if job is None or job.status in FINAL:
                return
            result = design_candidates(session, ctx.store, job)
        with session_scope(ctx.db_url) as session:
            progress.set_job_details(session, job_id, {"phase": "done", "ranked": result["ranked"]},
                                     progress_done=1)
            progress.succeed_job(session, job_id, result)
    except Exception as exc:
        from worker.tasks import fail_job_unless_transient

        fail_job_unless_transient(ctx, job_id, exc, "design")
