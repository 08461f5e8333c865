"""``users``: users and their API tokens."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from facewarden.core.results import UserOut, UserStateOut
from facewarden.web.auth import CurrentActor, get_fw
from facewarden.web.errors import error_responses
from facewarden.web.models import NewUserOut, TokenOut
from facewarden.web.routes.common import AS_USER, PREFIX, ContractRoute, Json, Text

router = APIRouter(prefix=PREFIX, tags=["users"], responses=AS_USER, route_class=ContractRoute)


class UserIn(BaseModel):
    name: Text = Field(min_length=1, max_length=100)
    roles: list[Text] = Field(min_length=1)


@router.get("/users", response_model=list[UserOut])
def list_users(request: Request, actor: CurrentActor) -> list[Json]:
    """Users with roles, state, token expiry and last use."""
    return get_fw(request).users.list(actor)


@router.post(
    "/users/{name}/disable", response_model=UserStateOut, responses=error_responses(404, 422)
)
def disable_user(name: Text, request: Request, actor: CurrentActor) -> Json:
    """Disable a user: their token and console sessions stop working at once."""
    return get_fw(request).users.set_active(actor, name, False)


@router.post(
    "/users/{name}/enable", response_model=UserStateOut, responses=error_responses(404, 422)
)
def enable_user(name: Text, request: Request, actor: CurrentActor) -> Json:
    """Enable a disabled user again."""
    return get_fw(request).users.set_active(actor, name, True)


@router.post("/users/{name}/token", response_model=TokenOut, responses=error_responses(404, 422))
def rotate_token(name: Text, request: Request, actor: CurrentActor) -> Json:
    """Issue a new token (returned once); the old one and the user's console sessions end
    at once. Admins rotate anyone's token, every user their own."""
    return {"name": name, "token": get_fw(request).users.rotate(actor, name)}


@router.post(
    "/users", status_code=201, response_model=NewUserOut, responses=error_responses(413, 422)
)
def add_user(body: UserIn, request: Request, actor: CurrentActor) -> Json:
    """Create a user; the API token is returned once and stored only as a hash."""
    token = get_fw(request).users.add(actor, body.name, body.roles)
    return {"name": body.name, "roles": body.roles, "token": token}
