"""Response models of what only the HTTP API answers (the caller, new tokens, ingest jobs),
and of the results that services define (a case, a candidate's state, an ingest job): each
``derived`` from the service's dataclass. The results and receipts of ``core/`` are in
``core/results.py``."""

from __future__ import annotations

from facewarden.core.results import DecisionOut, IngestSummaryOut, Wire, derived
from facewarden.services.cases import CaseInfo
from facewarden.services.confirmations import CandidateState
from facewarden.services.jobs import Job


@derived(CaseInfo)
class CaseOut(Wire):
    """A case (``CaseInfo.as_dict``); its times as ISO 8601 text (``datetime.isoformat``)."""

    opened_at: str
    expires_at: str
    closed_at: str | None


@derived(CandidateState)
class CandidateStateOut(Wire):
    """A candidate's decisions and state: ``pending``, ``identified`` or ``rejected``."""

    decisions: list[DecisionOut]


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


@derived(Job, drop=("cancel",), rename={"id": "job_id"})
class JobOut(Wire):
    """An ingest job: progress and, when finished, its summary or its error."""

    summary: IngestSummaryOut | None
    error: JobErrorOut | None


class HealthOut(Wire):
    """Liveness and readiness (``/healthz``, no log-in)."""

    status: str
    database: str
    index_size: int
