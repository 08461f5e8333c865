"""Cases: every search is tied to one, with its purpose, legal basis and authorisation."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from facewarden.adapters.storage.db import transaction
from facewarden.adapters.storage.tables import Case
from facewarden.core.actors import Actor
from facewarden.core.durations import parse_duration
from facewarden.core.errors import InvalidInput, NotFound, Refused

if TYPE_CHECKING:
    from facewarden.services.app import Facewarden


@dataclass
class CaseInfo:
    ref: str
    purpose: str
    legal_basis: str
    authorisation: str
    offence: str | None
    status: str
    opened_by: str
    opened_at: datetime
    expires_at: datetime

    @classmethod
    def of(cls, c: Case) -> CaseInfo:
        from facewarden.services.app import as_utc

        return cls(
            c.ref,
            c.purpose,
            c.legal_basis,
            c.authorisation,
            c.offence,
            c.status,
            c.opened_by,
            as_utc(c.opened_at),
            as_utc(c.expires_at),
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["opened_at"] = self.opened_at.isoformat()
        data["expires_at"] = self.expires_at.isoformat()
        return data


class CaseService:
    def __init__(self, app: Facewarden) -> None:
        self.app = app

    def open(
        self,
        actor: Actor,
        ref: str,
        *,
        purpose: str,
        legal_basis: str,
        authorisation: str,
        offence: str | None = None,
        expires: str = "30d",
    ) -> CaseInfo:
        self.app.authorize(actor, "case.open", "investigator", case_ref=ref)
        from facewarden.services.app import utcnow

        for value, what in (
            (ref, "reference"),
            (purpose, "purpose"),
            (legal_basis, "legal basis"),
            (authorisation, "authorisation"),
        ):
            if not (value or "").strip():
                raise InvalidInput(f"a case needs a {what}: refused")
        now = utcnow()
        try:
            with transaction(self.app.writes) as session:
                case = Case(
                    ref=ref.strip(),
                    purpose=purpose.strip(),
                    legal_basis=legal_basis.strip(),
                    authorisation=authorisation.strip(),
                    offence=offence,
                    status="open",
                    opened_by=actor.name,
                    opened_at=now,
                    expires_at=now + parse_duration(expires),
                )
                session.add(case)
                session.flush()
                self.app.audit.append(
                    session,
                    actor,
                    "case.open",
                    case_ref=case.ref,
                    legal_basis=case.legal_basis,
                    purpose=case.purpose,
                    details={
                        "authorisation": case.authorisation,
                        "expires_at": case.expires_at.isoformat(),
                    },
                )
        except IntegrityError as exc:
            raise InvalidInput(f"case {ref!r} already exists") from exc
        return CaseInfo.of(case)

    def close(self, actor: Actor, ref: str) -> CaseInfo:
        self.app.authorize(actor, "case.close", "investigator", "admin", case_ref=ref)
        from facewarden.services.app import utcnow

        with transaction(self.app.writes) as session:
            case = self._get(session, ref)
            case.status, case.closed_at = "closed", utcnow()
            self.app.audit.append(
                session,
                actor,
                "case.close",
                case_ref=ref,
                legal_basis=case.legal_basis,
                purpose=case.purpose,
            )
        return CaseInfo.of(case)

    def show(self, ref: str) -> CaseInfo:
        with self.app.sessions() as session:
            return CaseInfo.of(self._get(session, ref))

    def list(self) -> list[CaseInfo]:
        with self.app.sessions() as session:
            return [CaseInfo.of(c) for c in session.scalars(select(Case).order_by(Case.opened_at))]

    def _get(self, session, ref: str) -> Case:
        case = session.scalar(select(Case).where(Case.ref == ref))
        if case is None:
            raise NotFound(f"no case {ref!r}")
        return case

    def require_usable(self, actor: Actor, ref: str | None, action: str) -> CaseInfo:
        """The case must exist, be open and unexpired; otherwise refuse and log the refusal."""
        from facewarden.services.app import utcnow

        problem = None
        info = None
        if not ref:
            problem = f"{action} refused: a case reference is required (--case)"
        else:
            with self.app.sessions() as session:
                case = session.scalar(select(Case).where(Case.ref == ref))
                if case is None:
                    problem = f"{action} refused: no case {ref!r}"
                else:
                    info = CaseInfo.of(case)
                    if info.status != "open":
                        problem = f"{action} refused: case {ref!r} is {info.status}"
                    elif info.expires_at <= utcnow():
                        when = f"{info.expires_at:%Y-%m-%d %H:%M}"
                        problem = f"{action} refused: case {ref!r} expired at {when}"
        if problem:
            self.app.audit.record(actor, action, outcome="refused", case_ref=ref, error=problem)
            raise Refused(problem, code="case_required")
        assert info is not None
        return info
