"""``sources``: registered media sources."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from facewarden.core.results import DeletionCountsOut
from facewarden.services.sources import SourceInfo
from facewarden.web.auth import CurrentActor, get_fw
from facewarden.web.errors import error_responses
from facewarden.web.routes.common import AS_USER, PREFIX, ContractRoute, Json, Text

router = APIRouter(prefix=PREFIX, tags=["sources"], responses=AS_USER, route_class=ContractRoute)


class SourceIn(BaseModel):
    name: Text = Field(min_length=1, max_length=100)
    lawful_basis: Text = Field(min_length=1)
    purpose: Text = Field(min_length=1)
    jurisdiction: Text = Field(min_length=2, max_length=2, examples=["DE"])
    retention: Text = Field(examples=["365d"])
    note: Text | None = None


@router.get("/sources", response_model=list[SourceInfo])
def list_sources(request: Request, actor: CurrentActor) -> list[Json]:
    """Registered sources with their media counts."""
    return [vars(s) for s in get_fw(request).sources.list()]


@router.post(
    "/sources", status_code=201, response_model=SourceInfo, responses=error_responses(413, 422)
)
def add_source(body: SourceIn, request: Request, actor: CurrentActor) -> Json:
    """Register a source: lawful basis, purpose, jurisdiction and retention are mandatory."""
    info = get_fw(request).sources.add(
        actor,
        body.name,
        lawful_basis=body.lawful_basis,
        purpose=body.purpose,
        jurisdiction=body.jurisdiction,
        retention=body.retention,
        note=body.note,
    )
    return vars(info)


@router.delete(
    "/sources/{name}", response_model=DeletionCountsOut, responses=error_responses(404, 422)
)
def delete_source(name: Text, request: Request, actor: CurrentActor) -> Json:
    """Delete a source with all its media, faces, templates, crops and index entries."""
    return get_fw(request).gallery.delete_source(actor, name)
