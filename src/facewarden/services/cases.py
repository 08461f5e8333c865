"""Cases: every search is tied to one, with its purpose, legal basis and authorisation."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from facewarden.adapters.storage.db import transaction
from facewarden.adapters.storage.tables import Case, CaseMember, CaseSearch, User
from facewarden.core.actors import Actor
from facewarden.core.clock import as_utc, utcnow
from facewarden.core.durations import parse_duration
from facewarden.core.errors import InvalidInput, NotFound, Refused
from facewarden.core.limits import MAX_QUOTA, NAME_CHARS, check_text

if TYPE_CHECKING:
    from facewarden.services.app import Facewarden


CASE_READERS = ("investigator", "reviewer", "dpo", "auditor", "admin")
"""Who may list and read cases (their references, bases, members and search counts)."""


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
    closed_at: datetime | None
    investigators: list[str]
    search_quota: int
    searches: int
    keep_probe_templates: bool

    @classmethod
    def of(cls, c: Case, searches: int = 0) -> CaseInfo:

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
            as_utc(c.closed_at) if c.closed_at else None,
            sorted(m.user_name for m in c.members),
            c.search_quota,
            searches,
            c.keep_probe_templates,
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("opened_at", "expires_at", "closed_at"):
            data[key] = data[key].isoformat() if data[key] else None
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
        investigators: list[str] | None = None,
        quota: int | None = None,
        keep_probe_templates: bool = False,
    ) -> CaseInfo:
        """Open a case. The opener, when an investigator, is assigned to it."""
        check_text(ref, "case reference", NAME_CHARS)
        for value, what in (
            (purpose, "purpose"),
            (legal_basis, "legal basis"),
            (authorisation, "authorisation"),
            (offence, "offence"),
        ):
            check_text(value, what)
        for name in investigators or []:
            check_text(name, "investigator name", NAME_CHARS)
        lifetime = parse_duration(expires)
        self.app.authorize(actor, "case.open", "investigator", "admin", case_ref=ref)

        for value, what in (
            (ref, "reference"),
            (purpose, "purpose"),
            (legal_basis, "legal basis"),
            (authorisation, "authorisation"),
        ):
            if not (value or "").strip():
                raise InvalidInput(f"a case needs a {what}: refused")
        quota = self.app.settings.case_search_quota if quota is None else quota
        if not 1 <= quota <= MAX_QUOTA:
            raise InvalidInput(f"a case's search quota must be between 1 and {MAX_QUOTA}")
        members = set(investigators or [])
        if actor.has("investigator"):
            members.add(actor.name)
        if not members:
            raise InvalidInput("a case needs at least one investigator (--investigator NAME)")
        now = utcnow()
        try:
            with transaction(self.app.writes) as session:
                self._check_investigators(session, members)
                case = Case(
                    ref=ref.strip(),
                    purpose=purpose.strip(),
                    legal_basis=legal_basis.strip(),
                    authorisation=authorisation.strip(),
                    offence=offence,
                    status="open",
                    opened_by=actor.name,
                    opened_at=now,
                    expires_at=now + lifetime,
                    search_quota=quota,
                    keep_probe_templates=keep_probe_templates,
                    members=[
                        CaseMember(user_name=m, added_by=actor.name, added_at=now)
                        for m in sorted(members)
                    ],
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
                        "investigators": sorted(members),
                        "search_quota": quota,
                        "keep_probe_templates": keep_probe_templates,
                    },
                )
        except IntegrityError as exc:
            raise InvalidInput(f"case {ref!r} already exists") from exc
        return CaseInfo.of(case)

    def assign(self, actor: Actor, ref: str, user: str, *, remove: bool = False) -> CaseInfo:
        """Assign an investigator to a case (or remove one): its opener or an admin may."""
        action = "case.unassign" if remove else "case.assign"

        with self.app.sessions() as session:
            case = self._get(session, ref)
            allowed = actor.has("admin") or case.opened_by == actor.name
        if not allowed:
            self.app.authorize(actor, action, "admin", case_ref=ref, details={"user": user})
        with transaction(self.app.writes) as session:
            case = self._get(session, ref)
            current = {m.user_name for m in case.members}
            if remove:
                if user not in current:
                    raise NotFound(f"{user!r} is not assigned to case {ref!r}")
                case.members = [m for m in case.members if m.user_name != user]
            else:
                self._check_investigators(session, {user})
                if user in current:
                    raise InvalidInput(f"{user!r} is already assigned to case {ref!r}")
                case.members.append(
                    CaseMember(user_name=user, added_by=actor.name, added_at=utcnow())
                )
            session.flush()
            self.app.audit.append(
                session,
                actor,
                action,
                case_ref=ref,
                legal_basis=case.legal_basis,
                purpose=case.purpose,
                details={"user": user},
            )
            return CaseInfo.of(case, self._searches(session, case))

    def _check_investigators(self, session: Session, names: set[str]) -> None:
        users = {
            u.name: u
            for u in session.scalars(select(User).where(User.name.in_(names), User.active))
        }
        for name in sorted(names):
            if name not in users:
                raise InvalidInput(f"no active user named {name!r}")
            if "investigator" not in users[name].roles.split(","):
                raise InvalidInput(f"{name!r} is not an investigator and cannot be assigned")

    def close(self, actor: Actor, ref: str) -> CaseInfo:
        self.app.authorize(actor, "case.close", "investigator", "admin", case_ref=ref)

        with transaction(self.app.writes) as session:
            case = self._get(session, ref)
            info = CaseInfo.of(case)
            if actor.has("admin") or actor.name in info.investigators:
                from facewarden.services.gallery import wipe_probe_templates

                case.status, case.closed_at = "closed", utcnow()
                wiped = wipe_probe_templates(session, [case.id], case.closed_at)
                self.app.audit.append(
                    session,
                    actor,
                    "case.close",
                    case_ref=ref,
                    legal_basis=case.legal_basis,
                    purpose=case.purpose,
                    details={"probe_templates_wiped": wiped},
                )
                return CaseInfo.of(case, self._searches(session, case))
        problem = f"case.close refused: {actor.name} is not assigned to case {ref!r}"
        self.refuse(actor, "case.close", ref, info, problem, "not_assigned")

    def show(self, actor: Actor, ref: str) -> CaseInfo:
        self.app.authorize(actor, "case.show", *CASE_READERS, case_ref=ref)
        with self.app.sessions() as session:
            case = self._get(session, ref)
            return CaseInfo.of(case, self._searches(session, case))

    def list(self, actor: Actor) -> list[CaseInfo]:
        self.app.authorize(actor, "case.list", *CASE_READERS)
        return self.all()

    def all(self) -> list[CaseInfo]:
        """Every case (internal: callers have authorised already)."""
        with self.app.sessions() as session:
            counts = dict(
                session.execute(
                    select(CaseSearch.case_id, func.count()).group_by(CaseSearch.case_id)
                ).all()
            )
            return [
                CaseInfo.of(c, counts.get(c.id, 0))
                for c in session.scalars(select(Case).order_by(Case.opened_at))
            ]

    def _get(self, session: Session, ref: str) -> Case:
        case = session.scalar(select(Case).where(Case.ref == ref))
        if case is None:
            raise NotFound(f"no case {ref!r}")
        return case

    @staticmethod
    def _searches(session: Session, case: Case) -> int:
        return session.scalar(select(func.count()).where(CaseSearch.case_id == case.id)) or 0

    def problem(
        self,
        session: Session,
        actor: Actor,
        ref: str | None,
        action: str,
        *,
        assigned: bool,
        case: Case | None = None,
    ) -> tuple[str | None, str, CaseInfo | None]:
        """Why ``actor`` may not ``action`` under case ``ref`` now (None when allowed),
        with the refusal's error code and the case. ``case``: the row, if already loaded."""

        if not ref:
            return f"{action} refused: a case reference is required (--case)", "case_required", None
        if case is None:
            case = session.scalar(select(Case).where(Case.ref == ref))
        if case is None:
            return f"{action} refused: no case {ref!r}", "case_required", None
        info = CaseInfo.of(case, self._searches(session, case))
        if info.status != "open":
            return f"{action} refused: case {ref!r} is {info.status}", "case_closed", info
        if info.expires_at <= utcnow():
            when = f"{info.expires_at:%Y-%m-%d %H:%M}"
            return f"{action} refused: case {ref!r} expired at {when}", "case_expired", info
        if assigned and actor.name not in info.investigators:
            return (
                f"{action} refused: {actor.name} is not assigned to case {ref!r}",
                "not_assigned",
                info,
            )
        if action == "search" and info.searches >= info.search_quota:
            return (
                f"search refused: case {ref!r} has used its quota of {info.search_quota} searches",
                "quota_exhausted",
                info,
            )
        return None, "", info

    def require_usable(
        self, actor: Actor, ref: str | None, action: str, *, assigned: bool = True, **audit: Any
    ) -> CaseInfo:
        """The case must exist, be open and unexpired, have the actor assigned (unless
        ``assigned`` is false) and, for searches, quota left. Refusals are logged."""
        with self.app.sessions() as session:
            problem, code, info = self.problem(session, actor, ref, action, assigned=assigned)
        if problem:
            self.refuse(actor, action, ref, info, problem, code, **audit)
        assert info is not None
        return info

    def refuse(
        self,
        actor: Actor,
        action: str,
        ref: str | None,
        info: CaseInfo | None,
        problem: str,
        code: str,
        **audit: Any,
    ) -> NoReturn:
        """Log a refusal under the case, then raise it."""
        basis = {"legal_basis": info.legal_basis, "purpose": info.purpose} if info else {}
        self.app.audit.record(
            actor, action, outcome="refused", case_ref=ref, error=problem, **basis, **audit
        )
        raise Refused(problem, code=code)
