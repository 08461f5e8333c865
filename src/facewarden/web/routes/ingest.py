"""``ingest``: uploads ingested as background jobs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile

from facewarden.web.auth import CurrentActor
from facewarden.web.errors import error_responses
from facewarden.web.models import JobOut
from facewarden.web.routes.common import AS_USER, PREFIX, ContractRoute, Json, Text

router = APIRouter(prefix=PREFIX, tags=["ingest"], responses=AS_USER, route_class=ContractRoute)


@router.post(
    "/ingest", status_code=202, response_model=JobOut, responses=error_responses(404, 413, 422)
)
def ingest(
    request: Request,
    actor: CurrentActor,
    source: Annotated[Text, Form(min_length=1)],
    files: Annotated[list[UploadFile], File(description="Images or .zip archives.")],
) -> Json:
    """Upload images or zip archives into a source; ingest runs as a background job."""
    job = request.app.state.jobs.submit(
        actor, source, ((f.filename or "upload", f.file) for f in files)
    )
    return job.as_dict()


@router.get("/jobs", response_model=list[JobOut])
def list_jobs(request: Request, actor: CurrentActor) -> list[Json]:
    """The caller's ingest jobs, newest first (admins: everyone's)."""
    return [j.as_dict() for j in request.app.state.jobs.list(actor)]


@router.get("/jobs/{job_id}", response_model=JobOut, responses=error_responses(404, 422))
def get_job(job_id: Text, request: Request, actor: CurrentActor) -> Json:
    """Progress and, when finished, the summary with skipped files and reasons."""
    return request.app.state.jobs.get(actor, job_id).as_dict()


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, responses=error_responses(404, 422))
def cancel_job(job_id: Text, request: Request, actor: CurrentActor) -> Json:
    """Stop a job after the image in progress (stored images stay complete)."""
    return request.app.state.jobs.cancel(actor, job_id).as_dict()
