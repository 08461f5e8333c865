"""Who is calling: a bearer token (API clients) or a console session (a server-side record
named by a signed cookie, + CSRF).

Both end in the core's ``Actor``; what the actor may do is decided by the core services.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from facewarden.core.actors import Actor
from facewarden.core.errors import Unauthenticated
from facewarden.services.app import Facewarden
from facewarden.web.errors import ApiError

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CSRF_HEADER = "X-CSRF-Token"

bearer = HTTPBearer(
    auto_error=False,
    description="An API token from `facewarden init` or `facewarden user add`.",
)


AUTH_SUMMARY_S = 60.0
"""Failed authentications from one client are written to the audit log at most once per
this many seconds, each record counting the failures since the previous one."""


def get_fw(request: Request) -> Facewarden:
    return request.app.state.fw


def unauthenticated(message: str, code: str = "unauthenticated") -> ApiError:
    return ApiError(401, code, message, {"WWW-Authenticate": "Bearer"})


class AuthGuard:
    """Failed authentications: limited per client address and per user name (429 with
    Retry-After beyond ``FACEWARDEN_AUTH_FAILURE_LIMIT``), and summarised in the audit log
    (one record per client per minute with the count) instead of one record per attempt."""

    def __init__(self, rule: str) -> None:
        self.rule = parse(rule)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.lock = threading.Lock()
        self.unreported: dict[str, int] = {}
        self.reported_at: dict[str, float] = {}
        self.limited: set[str] = set()

    @staticmethod
    def _keys(client: str, name: str | None) -> list[tuple[str, str]]:
        return [("client", client)] + ([("user", name)] if name else [])

    def check(self, fw: Facewarden, client: str, name: str | None = None) -> None:
        """Refuse (429) while the client or the user name is over the failure limit."""
        for kind, value in self._keys(client, name):
            if not self.limiter.test(self.rule, "auth", kind, value):
                reset = self.limiter.get_window_stats(self.rule, "auth", kind, value).reset_time
                wait = max(1, math.ceil(reset - time.time()))
                with self.lock:
                    first = client not in self.limited
                    self.limited.add(client)
                self._note(fw, client, name, "rate_limited", force=first)
                raise ApiError(
                    429,
                    "rate_limited",
                    f"too many failed authentications for this {kind} "
                    f"(limit {self.rule}); retry in {wait} s",
                    {"Retry-After": str(wait)},
                )
        with self.lock:
            self.limited.discard(client)

    def failed(self, fw: Facewarden, client: str, name: str | None, code: str) -> None:
        for kind, value in self._keys(client, name):
            self.limiter.hit(self.rule, "auth", kind, value)
        self._note(fw, client, name, code)

    def _note(
        self, fw: Facewarden, client: str, name: str | None, code: str, force: bool = False
    ) -> None:
        """Count one failure; write a record for the first one, when the limit starts
        refusing, and then at most once per ``AUTH_SUMMARY_S`` with the count since."""
        now = time.monotonic()
        with self.lock:
            count = self.unreported.get(client, 0) + 1
            last = self.reported_at.get(client)
            if not force and last is not None and now - last < AUTH_SUMMARY_S:
                self.unreported[client] = count
                return
            if len(self.reported_at) > 10_000:
                self.reported_at.clear()
                self.unreported.clear()
            self.reported_at[client], self.unreported[client] = now, 0
        fw.audit.record(
            "anonymous",
            "auth.failed",
            outcome="refused",
            error=f"failed authentication ({code})",
            details={"client": client, "user": name, "failures": count, "last": code},
        )


_guard_lock = threading.Lock()


def auth_guard(request: Request) -> AuthGuard:
    state = request.app.state
    with _guard_lock:
        guard = getattr(state, "auth_guard", None)
        if guard is None:
            guard = state.auth_guard = AuthGuard(get_fw(request).settings.auth_failure_limit)
    return guard


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def current_actor(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Actor:
    fw = get_fw(request)
    if credentials is not None:
        guard, client = auth_guard(request), client_of(request)
        guard.check(fw, client)
        try:
            actor = fw.actor(token=credentials.credentials)
        except Unauthenticated as exc:
            guard.failed(fw, client, None, exc.code)
            raise unauthenticated(exc.message, exc.code) from exc
        request.state.actor = actor  # a refusal of the request's values is logged as theirs
        return actor
    session = request.session
    if not session.get("sid"):
        raise unauthenticated("log in, or send 'Authorization: Bearer <API token>'")
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not sent or not secrets.compare_digest(sent, session.get("csrf", "")):
            raise ApiError(403, "csrf", f"missing or wrong {CSRF_HEADER} header for this session")
    try:
        actor = fw.users.session_actor(session["sid"])
    except Unauthenticated as exc:
        session.clear()
        raise unauthenticated(exc.message, exc.code) from exc
    request.state.actor = actor
    return actor


CurrentActor = Annotated[Actor, Depends(current_actor)]


def start_session(request: Request, fw: Facewarden, token: str, name: str | None = None) -> Actor:
    """Log in with an API token (and optionally the user name it belongs to): the server
    keeps the session's record; the cookie holds its id and a CSRF secret."""
    guard, client = auth_guard(request), client_of(request)
    name = (name or "").strip()[:100] or None  # user names are at most 100 characters
    guard.check(fw, client, name)
    try:
        sid, actor = fw.users.start_session(token.strip(), name=name)
    except Unauthenticated as exc:
        guard.failed(fw, client, name, exc.code)
        raise unauthenticated(exc.message, exc.code) from exc
    request.session.clear()
    request.session.update({"sid": sid, "csrf": secrets.token_urlsafe(32), "user": actor.name})
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
