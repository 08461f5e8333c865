"""Registered sources: where media comes from, on which lawful basis, for how long."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from facewarden.adapters.storage.db import transaction
from facewarden.adapters.storage.tables import Media, Source
from facewarden.core.actors import Actor
from facewarden.core.clock import utcnow
from facewarden.core.durations import parse_duration
from facewarden.core.errors import InvalidInput, NotFound
from facewarden.core.limits import NAME_CHARS, check_text
from facewarden.services.access import RoleGuard
from facewarden.services.audit import AuditLog
from facewarden.services.manifest import valid_field_names

_JURISDICTION = re.compile(r"^[A-Z]{2}$")


@dataclass
class SourceInfo:
    name: str
    lawful_basis: str
    purpose: str
    jurisdiction: str
    retention_days: float
    note: str | None
    media: int = 0
    subject_fields: list[str] | None = None
    """Metadata fields an ingest manifest may record about this source's subjects."""

    @classmethod
    def of(cls, src: Source, media: int = 0) -> SourceInfo:
        return cls(
            src.name,
            src.lawful_basis,
            src.purpose,
            src.jurisdiction,
            src.retention_days,
            src.note,
            media,
            src.subject_fields,
        )


def _required(value: str | None, what: str) -> str:
    value = (value or "").strip()
    if not value:
        raise InvalidInput(f"a source needs a {what}: refused")
    return value


class SourceService:
    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        writes: sessionmaker[Session],
        audit: AuditLog,
        guard: RoleGuard,
    ) -> None:
        self.sessions = sessions
        self.writes = writes
        self.audit = audit
        self.guard = guard

    def add(
        self,
        actor: Actor,
        name: str,
        *,
        lawful_basis: str,
        purpose: str,
        jurisdiction: str,
        retention: str,
        note: str | None = None,
        subject_fields: list[str] | None = None,
    ) -> SourceInfo:
        self.guard.authorize(actor, "source.add", "operator", "admin")
        check_text(name, "source name", NAME_CHARS)
        for value, what in ((lawful_basis, "lawful basis"), (purpose, "purpose"), (note, "note")):
            check_text(value, what)
        fields = valid_field_names(subject_fields) if subject_fields else None
        name = _required(name, "name")
        lawful_basis = _required(lawful_basis, "lawful basis (--lawful-basis)")
        purpose = _required(purpose, "purpose (--purpose)")
        jurisdiction = _required(jurisdiction, "jurisdiction (--jurisdiction)").upper()
        if not _JURISDICTION.match(jurisdiction):
            raise InvalidInput(f"jurisdiction {jurisdiction!r} must be a two-letter ISO 3166 code")
        days = (
            parse_duration(_required(retention, "retention period (--retention)")).total_seconds()
            / 86400
        )

        try:
            with transaction(self.writes) as session:
                src = Source(
                    name=name,
                    lawful_basis=lawful_basis,
                    purpose=purpose,
                    jurisdiction=jurisdiction,
                    retention_days=days,
                    note=note,
                    subject_fields=fields,
                    created_by=actor.name,
                    created_at=utcnow(),
                )
                session.add(src)
                session.flush()
                self.audit.append(
                    session,
                    actor,
                    "source.add",
                    legal_basis=lawful_basis,
                    purpose=purpose,
                    details={
                        "source": name,
                        "jurisdiction": jurisdiction,
                        "retention_days": days,
                        "subject_fields": fields,
                    },
                )
        except IntegrityError as exc:
            raise InvalidInput(f"a source named {name!r} already exists") from exc
        return SourceInfo.of(src)

    def get(self, session, name: str) -> Source:
        src = session.scalar(select(Source).where(Source.name == name))
        if src is None:
            raise NotFound(f"no source named {name!r}: register it with 'facewarden source add'")
        return src

    def list(self) -> list[SourceInfo]:
        with self.sessions() as session:
            rows = session.execute(
                select(Source, func.count(Media.id))
                .outerjoin(Media)
                .group_by(Source.id)
                .order_by(Source.name)
            ).all()
            return [SourceInfo.of(src, n) for src, n in rows]
