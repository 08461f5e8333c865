"""Users, roles, API tokens (shown once, stored hashed) and console sessions.

Authentication is here, in the core, so every interface ends in the same checks: the user
is active, the token is the current one and has not expired, and a console session is a
server-side record that log-out, token rotation and disabling the user end at once.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from facewarden.adapters.storage.db import rowcount, transaction
from facewarden.adapters.storage.tables import ConsoleSession, User
from facewarden.config import Settings
from facewarden.core.actors import ROLES, Actor
from facewarden.core.clock import as_utc, utcnow
from facewarden.core.errors import InvalidInput, NotFound, Refused, Unauthenticated
from facewarden.core.faults import storage_failure
from facewarden.core.limits import NAME_CHARS, check_text
from facewarden.services.access import RoleGuard
from facewarden.services.audit import AuditLog

log = logging.getLogger(__name__)

LAST_USE_RESOLUTION = timedelta(minutes=1)
"""``last_used_at`` is written at most once a minute per user (not on every request)."""


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


class UserService:
    def __init__(
        self,
        *,
        settings: Settings,
        sessions: sessionmaker[Session],
        writes: sessionmaker[Session],
        audit: AuditLog,
        guard: RoleGuard,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.writes = writes
        self.audit = audit
        self.guard = guard

    # -- authentication ---------------------------------------------------------------------
    def token_expiry(self, user: User) -> datetime | None:
        days = self.settings.token_days
        issued = user.token_issued_at or user.created_at
        return as_utc(issued) + timedelta(days=days) if days and issued else None

    def authenticate(self, token_hash: str, *, allow_expired: bool = False) -> Actor:
        """The active user whose current token has this hash. ``allow_expired``: accept an
        expired token (only to rotate it, locally)."""
        with self.sessions() as session:
            user = session.scalar(select(User).where(User.token_hash == token_hash))
            if user is None:
                raise Unauthenticated("unknown or revoked API token")
            return self._admit(session, user, allow_expired=allow_expired)

    def _admit(self, session: Session, user: User, *, allow_expired: bool = False) -> Actor:
        if not user.active:
            raise Unauthenticated(f"user {user.name!r} is disabled", code="user_disabled")
        expires = self.token_expiry(user)
        now = utcnow()
        if expires is not None and expires <= now and not allow_expired:
            raise Unauthenticated(
                f"the API token of {user.name!r} expired at {expires:%Y-%m-%d %H:%M} UTC: "
                "an admin rotates it ('facewarden user token rotate NAME'), or its owner "
                "does so locally",
                code="token_expired",
            )
        last = as_utc(user.last_used_at) if user.last_used_at else None
        if last is None or now - last >= LAST_USE_RESOLUTION:
            try:
                with transaction(self.writes) as w:
                    w.execute(update(User).where(User.id == user.id).values(last_used_at=now))
            except Exception as exc:
                # Last use is a convenience: on a full disk, reads must still work.
                if storage_failure(exc) is None:
                    raise
                log.warning("last use of %s not recorded: %s", user.name, exc)
        return Actor(user.name, frozenset(user.roles.split(",")))

    def current(self, name: str) -> Actor:
        """The user ``name`` as they stand now (roles as now), for work that outlives the
        request that authenticated them (an upload's ingest job): Unauthenticated
        (``user_disabled``) once an admin disabled them."""
        with self.sessions() as session:
            user = self._get(session, name)
            if not user.active:
                raise Unauthenticated(f"user {user.name!r} is disabled", code="user_disabled")
            return Actor(user.name, frozenset(user.roles.split(",")))

    def user_of_token(self, token: str) -> str | None:
        """The name a token belongs to (active or not, expired or not), else None."""
        with self.sessions() as session:
            return session.scalar(select(User.name).where(User.token_hash == hash_secret(token)))

    # -- console sessions -------------------------------------------------------------------
    def start_session(self, token: str, *, name: str | None = None) -> tuple[str, Actor]:
        """Log in with an API token (and, if given, the name it must belong to): returns the
        session id for the cookie (only its hash is stored) and the actor."""
        token_hash = hash_secret(token)
        with self.sessions() as session:
            user = session.scalar(select(User).where(User.token_hash == token_hash))
            if user is None or (name is not None and user.name != name):
                raise Unauthenticated("unknown or revoked API token")
            actor = self._admit(session, user)
            user_id = user.id
        sid = secrets.token_urlsafe(32)
        now = utcnow()
        with transaction(self.writes) as session:
            session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
            session.add(
                ConsoleSession(
                    id_hash=hash_secret(sid),
                    user_id=user_id,
                    token_hash=token_hash,
                    created_at=now,
                    expires_at=now + timedelta(hours=self.settings.session_hours),
                )
            )
            self.audit.append(session, actor, "login")
        return sid, actor

    def session_actor(self, sid: str) -> Actor:
        """The user of a live console session, or ``Unauthenticated``."""
        with self.sessions() as session:
            row = session.execute(
                select(ConsoleSession, User)
                .join(User, User.id == ConsoleSession.user_id)
                .where(ConsoleSession.id_hash == hash_secret(sid))
            ).first()
            if row is None:
                raise Unauthenticated("the console session ended (logged out or revoked)")
            console, user = row
            if as_utc(console.expires_at) <= utcnow():
                raise Unauthenticated("the console session expired: log in again")
            if console.token_hash != user.token_hash:
                raise Unauthenticated("the user's token was rotated: log in again")
            return self._admit(session, user)

    def end_session(self, sid: str) -> bool:
        """Log-out: the session's record is deleted (its cookie no longer works anywhere)."""
        try:
            actor = self.session_actor(sid)
        except Unauthenticated:
            actor = None
        with transaction(self.writes) as session:
            gone = rowcount(
                session, delete(ConsoleSession).where(ConsoleSession.id_hash == hash_secret(sid))
            )
            if actor is not None:
                self.audit.append(session, actor, "logout")
        return bool(gone)

    # -- administration ---------------------------------------------------------------------
    def add(self, actor: Actor, name: str, roles: list[str]) -> str:
        """Create a user and return its API token; only its hash is stored."""
        check_text(name, "user name", NAME_CHARS)
        for role in roles:
            check_text(role, "role", NAME_CHARS)
        self.guard.authorize(actor, "user.add", "admin", details={"user": name, "roles": roles})
        unknown = sorted(set(roles) - set(ROLES))
        if not name.strip() or not roles or unknown:
            raise InvalidInput(
                f"a user needs a name and roles from {', '.join(ROLES)}"
                + (f" (unknown: {', '.join(unknown)})" if unknown else "")
            )
        token = new_token()
        now = utcnow()
        try:
            with transaction(self.writes) as session:
                session.add(
                    User(
                        name=name.strip(),
                        roles=",".join(sorted(set(roles))),
                        token_hash=hash_secret(token),
                        active=True,
                        created_at=now,
                        token_issued_at=now,
                    )
                )
                session.flush()
                self.audit.append(
                    session, actor, "user.add", details={"user": name, "roles": sorted(set(roles))}
                )
        except IntegrityError as exc:
            raise InvalidInput(f"a user named {name!r} already exists") from exc
        return token

    def list(self, actor: Actor) -> list[dict[str, Any]]:
        """Users with roles, state, token issue and expiry, and last use."""
        self.guard.authorize(actor, "user.list", "admin", "auditor")
        with self.sessions() as session:
            rows = []
            for u in session.scalars(select(User).order_by(User.name)):
                expires = self.token_expiry(u)
                rows.append(
                    {
                        "name": u.name,
                        "roles": u.roles.split(","),
                        "active": u.active,
                        "token_issued_at": _iso(u.token_issued_at),
                        "token_expires_at": expires.isoformat() if expires else None,
                        "token_expired": bool(expires and expires <= utcnow()),
                        "last_used_at": _iso(u.last_used_at),
                    }
                )
            return rows

    def set_active(self, actor: Actor, name: str, active: bool) -> dict[str, Any]:
        """Disable a user (their token and console sessions stop working at once) or
        enable them again. The last active admin cannot be disabled."""
        action = "user.enable" if active else "user.disable"
        self.guard.authorize(actor, action, "admin", details={"user": name})
        with transaction(self.writes) as session:
            user = self._get(session, name)
            if not active and user.active and "admin" in user.roles.split(","):
                admins = session.scalar(
                    select(func.count(User.id)).where(
                        User.active.is_(True), User.roles.like("%admin%"), User.id != user.id
                    )
                )
                if not admins:
                    raise Refused(
                        f"{name!r} is the last active admin: enable or add another first",
                        code="last_admin",
                    )
            user.active = active
            ended = 0 if active else self._end_sessions(session, user.id)
            self.audit.append(
                session, actor, action, details={"user": name, "sessions_ended": ended}
            )
        return {"name": name, "active": active, "sessions_ended": ended}

    def rotate(self, actor: Actor, name: str | None = None) -> str:
        """Issue a new token for ``name`` (default: the actor). The old token and every
        console session of the user stop working at once. Admins rotate anyone's; every
        user may rotate their own."""
        name = name or actor.name
        if name != actor.name:
            self.guard.authorize(actor, "user.token_rotate", "admin", details={"user": name})
        token = new_token()
        with transaction(self.writes) as session:
            user = self._get(session, name)
            user.token_hash, user.token_issued_at = hash_secret(token), utcnow()
            ended = self._end_sessions(session, user.id)
            self.audit.append(
                session, actor, "user.token_rotate", details={"user": name, "sessions_ended": ended}
            )
        return token

    @staticmethod
    def _end_sessions(session: Session, user_id: int) -> int:
        return rowcount(session, delete(ConsoleSession).where(ConsoleSession.user_id == user_id))

    @staticmethod
    def _get(session: Session, name: str) -> User:
        user = session.scalar(select(User).where(User.name == name))
        if user is None:
            raise NotFound(f"no user named {name!r}")
        return user


def _iso(value: datetime | None) -> str | None:
    return as_utc(value).isoformat() if value else None
