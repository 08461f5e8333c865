"""``audit``: the audit log (events, export, verification, head) and the records of
processing."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from facewarden.core.results import (
    AuditEntryOut,
    AuditHeadOut,
    ChainCheckOut,
    ProcessingReportOut,
)
from facewarden.web.auth import CurrentActor, get_fw
from facewarden.web.errors import error_responses
from facewarden.web.routes.common import AS_USER, MAX_ID, PREFIX, ContractRoute, Json, Text

router = APIRouter(prefix=PREFIX, tags=["audit"], responses=AS_USER, route_class=ContractRoute)


class AnchorIn(BaseModel):
    seq: int = Field(ge=0, le=MAX_ID)
    hash: Text = Field(min_length=64, max_length=64)


class VerifyAuditIn(BaseModel):
    anchors: list[AnchorIn] = []


@router.get("/audit/events", response_model=list[AuditEntryOut], responses=error_responses(422))
def audit_events(
    request: Request,
    actor: CurrentActor,
    action: Text | None = None,
    user: Text | None = None,
    case: Text | None = None,
    outcome: Text | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_seq: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[Json]:
    """Audit records, newest first, filtered (``since``/``until``: a time range, both
    inclusive); page with ``before_seq``."""
    return get_fw(request).oversight.events(
        actor,
        case_ref=case,
        since=since,
        until=until,
        action=action,
        user=user,
        outcome=outcome,
        before_seq=before_seq,
        limit=limit,
        newest_first=True,
    )


@router.get(
    "/audit/export",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"application/x-ndjson": {}, "text/csv": {}}},
        **error_responses(401, 403, 422, 429, 503, not_json=True),
    },
)
def audit_export(
    request: Request,
    actor: CurrentActor,
    format: Literal["jsonl", "csv"] = "jsonl",
    case: Text | None = None,
    since: datetime | None = None,
) -> Response:
    """The whole (or filtered) log as JSON lines or CSV, oldest first."""
    body = get_fw(request).oversight.export(actor, format, case_ref=case, since=since)
    media = "application/x-ndjson" if format == "jsonl" else "text/csv"
    name = f"facewarden-audit.{format}"
    return Response(
        body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


@router.post("/audit/verify", response_model=ChainCheckOut, responses=error_responses(413, 422))
def audit_verify(request: Request, actor: CurrentActor, body: VerifyAuditIn | None = None) -> Json:
    """Walk the hash chain; with anchors (from ``/audit/head``), also detect truncation."""
    anchors = [a.model_dump() for a in body.anchors] if body else None
    return get_fw(request).oversight.verify(actor, anchors)


@router.get("/audit/head", response_model=AuditHeadOut)
def audit_head(request: Request, actor: CurrentActor) -> Json:
    """The newest record's sequence number and hash: keep it outside the system."""
    return get_fw(request).oversight.head(actor)


@router.get("/report", response_model=ProcessingReportOut)
def report(request: Request, actor: CurrentActor) -> Json:
    """Records of processing: holdings per source and jurisdiction, searches, requests."""
    return get_fw(request).records.report(actor)
