"""Users, roles and API tokens (shown once, stored hashed)."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from facewarden.adapters.storage.db import transaction
from facewarden.adapters.storage.tables import User
from facewarden.core.actors import ROLES, Actor
from facewarden.core.clock import utcnow
from facewarden.core.errors import InvalidInput
from facewarden.core.limits import NAME_CHARS, check_text

if TYPE_CHECKING:
    from facewarden.services.app import Facewarden


class UserService:
    def __init__(self, app: Facewarden) -> None:
        self.app = app

    def add(self, actor: Actor, name: str, roles: list[str]) -> str:
        """Create a user and return its API token; only its hash is stored."""
        from facewarden.services.app import hash_token

        check_text(name, "user name", NAME_CHARS)
        for role in roles:
            check_text(role, "role", NAME_CHARS)
        self.app.authorize(actor, "user.add", "admin", details={"user": name, "roles": roles})
        unknown = sorted(set(roles) - set(ROLES))
        if not name.strip() or not roles or unknown:
            raise InvalidInput(
                f"a user needs a name and roles from {', '.join(ROLES)}"
                + (f" (unknown: {', '.join(unknown)})" if unknown else "")
            )
        token = secrets.token_urlsafe(32)
        try:
            with transaction(self.app.writes) as session:
                session.add(
                    User(
                        name=name.strip(),
                        roles=",".join(sorted(set(roles))),
                        token_hash=hash_token(token),
                        active=True,
                        created_at=utcnow(),
                    )
                )
                session.flush()
                self.app.audit.append(
                    session, actor, "user.add", details={"user": name, "roles": sorted(set(roles))}
                )
        except IntegrityError as exc:
            raise InvalidInput(f"a user named {name!r} already exists") from exc
        return token

    def list(self, actor: Actor) -> list[dict[str, object]]:
        self.app.authorize(actor, "user.list", "admin", "auditor")
        with self.app.sessions() as session:
            return [
                {"name": u.name, "roles": u.roles.split(","), "active": u.active}
                for u in session.scalars(select(User).order_by(User.name))
            ]
