"""Who is calling: a bearer token (API clients) or a console session (signed cookie + CSRF).

Both end in the core's ``Actor``; what the actor may do is decided by the core services.
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from facewarden.core.actors import Actor
from facewarden.core.errors import PermissionDenied
from facewarden.services.app import Facewarden, hash_token
from facewarden.web.errors import ApiError

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CSRF_HEADER = "X-CSRF-Token"

bearer = HTTPBearer(
    auto_error=False,
    description="An API token from `facewarden init` or `facewarden user add`.",
)


def get_fw(request: Request) -> Facewarden:
    return request.app.state.fw


def unauthenticated(message: str) -> ApiError:
    return ApiError(401, "unauthenticated", message, {"WWW-Authenticate": "Bearer"})


def current_actor(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Actor:
    fw = get_fw(request)
    if credentials is not None:
        try:
            return fw.actor(token=credentials.credentials)
        except PermissionDenied as exc:
            raise unauthenticated("unknown or revoked API token") from exc
    session = request.session
    if not session.get("th"):
        raise unauthenticated("log in, or send 'Authorization: Bearer <API token>'")
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not sent or not secrets.compare_digest(sent, session.get("csrf", "")):
            raise ApiError(403, "csrf", f"missing or wrong {CSRF_HEADER} header for this session")
    try:
        return fw.actor(token_hash=session["th"])
    except PermissionDenied as exc:
        session.clear()
        raise unauthenticated("the session's user was deactivated or its token revoked") from exc


CurrentActor = Annotated[Actor, Depends(current_actor)]


def start_session(request: Request, fw: Facewarden, token: str) -> Actor:
    """Log in with an API token: the session keeps the token's hash and a CSRF secret."""
    try:
        actor = fw.actor(token=token.strip())
    except PermissionDenied as exc:
        fw.audit.record("anonymous", "login", outcome="refused", error="unknown API token")
        raise unauthenticated("unknown or revoked API token") from exc
    request.session.clear()
    request.session.update(
        {"th": hash_token(token.strip()), "csrf": secrets.token_urlsafe(32), "user": actor.name}
    )
    fw.audit.record(actor, "login")
    return actor


class RateLimiter:
    """Per-user moving-window limit on searches and look-ups (``FACEWARDEN_SEARCH_RATE_LIMIT``)."""

    def __init__(self, rule: str) -> None:
        self.rule = parse(rule)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def check(self, actor: Actor, what: str = "search") -> None:
        if not self.limiter.hit(self.rule, what, actor.name):
            reset = self.limiter.get_window_stats(self.rule, what, actor.name).reset_time
            wait = max(1, int(reset - time.time()))
            raise ApiError(
                429,
                "rate_limited",
                f"{actor.name} is over the limit of {self.rule} {what}es; retry in {wait} s",
                {"Retry-After": str(wait)},
            )


def rate_limited(request: Request, actor: CurrentActor) -> Actor:
    request.app.state.limiter.check(actor)
    return actor


LimitedActor = Annotated[Actor, Depends(rate_limited)]
