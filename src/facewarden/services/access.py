"""Role checks: a refusal is logged in the audit log before it is raised."""

from __future__ import annotations

from typing import Any

from facewarden.core.actors import Actor
from facewarden.core.errors import PermissionDenied
from facewarden.services.audit import AuditLog


class RoleGuard:
    """Every service checks roles through this one object (and so logs refusals alike)."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    def authorize(self, actor: Actor, action: str, *roles: str, **audit_fields: Any) -> None:
        """Refuse (and log the refusal) unless the actor holds one of ``roles``."""
        if actor.has(*roles):
            return
        message = f"{actor.name} may not {action}: needs role {' or '.join(roles)}"
        self.audit.record(actor, action, outcome="refused", error=message, **audit_fields)
        raise PermissionDenied(message)
