"""``session``: who is calling."""

from __future__ import annotations

from fastapi import APIRouter

from facewarden.web.auth import CurrentActor
from facewarden.web.models import MeOut
from facewarden.web.routes.common import AS_USER, PREFIX, ContractRoute, Json

router = APIRouter(prefix=PREFIX, tags=["session"], responses=AS_USER, route_class=ContractRoute)


@router.get("/me", response_model=MeOut)
def me(actor: CurrentActor) -> Json:
    """The calling user and roles."""
    return {"name": actor.name, "roles": sorted(actor.roles)}
