"""Shared HTTP responses."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from app.schemas import JobAccepted


def accepted_response(body: JobAccepted) -> JSONResponse:
    """202 Accepted with the job and a ``Location: /jobs/{id}`` header to poll."""
    return JSONResponse(status_code=202, content=body.model_dump(mode="json"),
                        headers={"Location": f"/jobs/{body.job_id}"})
