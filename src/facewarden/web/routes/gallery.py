"""``gallery``: counts, deletion, purges, retention, restriction and the index."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from facewarden.core.results import (
    DeletionCountsOut,
    DeletionReceiptOut,
    IndexRebuildOut,
    StatsOut,
)
from facewarden.web.auth import CurrentActor, get_fw
from facewarden.web.errors import error_responses
from facewarden.web.models import MediaRestrictionOut
from facewarden.web.routes.common import AS_USER, PREFIX, ContractRoute, IdPath, Json, Text

router = APIRouter(prefix=PREFIX, tags=["gallery"], responses=AS_USER, route_class=ContractRoute)


class PurgeIn(BaseModel):
    jurisdiction: Text | None = Field(None, min_length=2, max_length=2)
    source: Text | None = None


class RestrictIn(BaseModel):
    restricted: bool = True


@router.get("/stats", response_model=StatsOut)
def stats(request: Request, actor: CurrentActor) -> Json:
    """Counts of sources, media, faces and the index."""
    return get_fw(request).stats()


@router.post("/purge", response_model=DeletionReceiptOut, responses=error_responses(404, 413, 422))
def purge(body: PurgeIn, request: Request, actor: CurrentActor) -> Json:
    """Delete every record of one jurisdiction or one source; returns the receipt."""
    return get_fw(request).gallery.purge(actor, jurisdiction=body.jurisdiction, source=body.source)


@router.post("/retention/run", response_model=DeletionReceiptOut)
def retention_run(request: Request, actor: CurrentActor) -> Json:
    """Delete what has passed its retention date now (the server also runs it periodically)."""
    return get_fw(request).gallery.retention_run(actor)


@router.post(
    "/media/{media_id}/restrict",
    response_model=MediaRestrictionOut,
    responses=error_responses(404, 413, 422),
)
def restrict(media_id: IdPath, body: RestrictIn, request: Request, actor: CurrentActor) -> Json:
    """Restrict a media from search (or lift the restriction), e.g. while a claim is checked."""
    get_fw(request).gallery.restrict(actor, media_id, restricted=body.restricted)
    return {"media_id": media_id, "restricted": body.restricted}


@router.delete(
    "/media/{media_id}", response_model=DeletionCountsOut, responses=error_responses(404, 422)
)
def delete_media(media_id: IdPath, request: Request, actor: CurrentActor) -> Json:
    """Delete one media with its faces, templates, crops and index entries."""
    return get_fw(request).gallery.delete_media(actor, [media_id])


@router.post("/index/rebuild", response_model=IndexRebuildOut, responses=error_responses(409))
def rebuild_index(request: Request, actor: CurrentActor) -> Json:
    """Rebuild the derived vector index from the database."""
    return get_fw(request).gallery.rebuild_index(actor)
