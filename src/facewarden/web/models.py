"""Response models of what only the HTTP API answers (the caller, new tokens, ingest jobs);
the results and receipts of the services are in ``core/results.py``."""

from __future__ import annotations

from facewarden.core.results import IngestSummaryOut, Wire


class MeOut(Wire):
    """The calling user and roles."""

    name: str
    roles: list[str]


class NewUserOut(Wire):
    """A user just created, with the API token (shown once)."""

    name: str
    roles: list[str]
    token: str


class TokenOut(Wire):
    """A new API token (shown once)."""

    name: str
    token: str


class MediaRestrictionOut(Wire):
    media_id: int
    restricted: bool


class JobErrorOut(Wire):
    code: str
    message: str


class JobOut(Wire):
    """An ingest job: progress and, when finished, its summary or its error."""

    job_id: str
    user: str
    source: str
    files: list[str]
    state: str
    """queued, running, done, cancelled or failed."""
    done: int
    total: int | None
    current: str
    created_at: str
    finished_at: str | None
    summary: IngestSummaryOut | None
    error: JobErrorOut | None


class HealthOut(Wire):
    """Liveness and readiness (``/healthz``, no log-in)."""

    status: str
    database: str
    index_size: int
