"""Cases: every search is tied to one, with its purpose, legal basis and authorisation."""

from __future__ import annotations

import builtins
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal, NoReturn

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from facewarden.adapters.storage.db import rowcount, transaction
from facewarden.adapters.storage.tables import (
    AuditEvent,
    Case,
    CaseMember,
    CaseSearch,
    ProbeFace,
    User,
)
from facewarden.config import Settings
from facewarden.core.actors import MEMBER_ROLES, OVERSIGHT, Actor
from facewarden.core.clock import as_utc, utcnow
from facewarden.core.durations import parse_duration
from facewarden.core.errors import InvalidInput, NotFound, Refused
from facewarden.core.limits import MAX_QUOTA, NAME_CHARS, check_text
from facewarden.services.access import RoleGuard
from facewarden.services.audit import AuditLog

CASE_READERS = ("investigator", "reviewer", "dpo", "auditor", "admin")
"""Who may list and read cases (their references, bases, members and search counts):
investigators and reviewers only the cases they are assigned to."""
CASE_ACTIONS = ("search", "verify")
"""Actions that use a case's quota."""


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
    reviewers: list[str]
    threshold_policy: str | None = None
    """``fixed`` or ``fpir``; None: the deployment's default."""
    target_fpir: float | None = None

    @property
    def members(self) -> list[str]:
        return self.investigators + self.reviewers

    @property
    def usable(self) -> bool:
        """Open and not expired."""
        return self.status == "open" and self.expires_at > utcnow()

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
            sorted(m.user_name for m in c.members if m.role != "reviewer"),
            c.search_quota,
            searches,
            c.keep_probe_templates,
            sorted(m.user_name for m in c.members if m.role == "reviewer"),
            c.threshold_policy,
            c.target_fpir,
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("opened_at", "expires_at", "closed_at"):
            data[key] = data[key].isoformat() if data[key] else None
        return data


def wipe_probe_templates(session, case_ids, now) -> int:
    """Drop the kept probe templates of the given cases (their hashes stay)."""
    return rowcount(
        session,
        update(CaseSearch)
        .where(CaseSearch.case_id.in_(case_ids), CaseSearch.probe_templates.is_not(None))
        .values(probe_templates=None, templates_wiped_at=now),
    )


def wipe_probe_faces(session, case_ids) -> int:
    """Delete the kept probe face crops of the given cases' searches."""
    searches = select(CaseSearch.id).where(CaseSearch.case_id.in_(case_ids))
    return rowcount(session, delete(ProbeFace).where(ProbeFace.search_id.in_(searches)))


class CaseService:
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
        threshold_policy: str | None = None,
        target_fpir: float | None = None,
    ) -> CaseInfo:
        """Open a case. The opener, when an investigator, is assigned to it; the people named
        are assigned as investigators or, when they are only reviewers, as reviewers."""
        check_text(ref, "case reference", NAME_CHARS)
        for value, what in (
            (purpose, "purpose"),
            (legal_basis, "legal basis"),
            (authorisation, "authorisation"),
            (offence, "offence"),
        ):
            check_text(value, what)
        for name in investigators or []:
            check_text(name, "member name", NAME_CHARS)
        lifetime = parse_duration(expires)
        self.guard.authorize(actor, "case.open", "investigator", "admin", case_ref=ref)

        for value, what in (
            (ref, "reference"),
            (purpose, "purpose"),
            (legal_basis, "legal basis"),
            (authorisation, "authorisation"),
        ):
            if not (value or "").strip():
                raise InvalidInput(f"a case needs a {what}: refused")
        quota = self.settings.case_search_quota if quota is None else quota
        if not 1 <= quota <= MAX_QUOTA:
            raise InvalidInput(f"a case's search quota must be between 1 and {MAX_QUOTA}")
        if target_fpir is not None:
            if threshold_policy not in (None, "fpir"):
                raise InvalidInput("a target FPIR needs the fpir threshold policy")
            threshold_policy = "fpir"
            if not 0 < target_fpir < 1:
                raise InvalidInput("the target FPIR must be in (0, 1), e.g. 0.01")
        if threshold_policy not in (None, "fixed", "fpir"):
            raise InvalidInput("the threshold policy is fixed or fpir")
        members = set(investigators or [])
        if actor.has("investigator"):
            members.add(actor.name)
        if not members:
            raise InvalidInput("a case needs at least one investigator (--investigator NAME)")
        now = utcnow()
        try:
            with transaction(self.writes) as session:
                roles = self._check_members(session, members)
                if "investigator" not in roles.values():
                    raise InvalidInput(
                        "a case needs at least one investigator (--investigator NAME)"
                    )
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
                    threshold_policy=threshold_policy,
                    target_fpir=target_fpir,
                    members=[
                        CaseMember(user_name=m, added_by=actor.name, added_at=now, role=roles[m])
                        for m in sorted(members)
                    ],
                )
                session.add(case)
                session.flush()
                self.audit.append(
                    session,
                    actor,
                    "case.open",
                    case_ref=case.ref,
                    legal_basis=case.legal_basis,
                    purpose=case.purpose,
                    details={
                        "authorisation": case.authorisation,
                        "expires_at": case.expires_at.isoformat(),
                        "investigators": sorted(m for m in members if roles[m] != "reviewer"),
                        "reviewers": sorted(m for m in members if roles[m] == "reviewer"),
                        "search_quota": quota,
                        "keep_probe_templates": keep_probe_templates,
                        "threshold_policy": threshold_policy,
                        "target_fpir": target_fpir,
                    },
                )
        except IntegrityError as exc:
            raise InvalidInput(f"case {ref!r} already exists") from exc
        return CaseInfo.of(case)

    def assign(self, actor: Actor, ref: str, user: str, *, remove: bool = False) -> CaseInfo:
        """Assign an investigator or a reviewer to a case (or remove one): its opener or an
        admin may. Only assigned people read the case's records."""
        action = "case.unassign" if remove else "case.assign"

        with self.sessions() as session:
            case = self._get(session, ref)
            allowed = actor.has("admin") or case.opened_by == actor.name
        if not allowed:
            self.guard.authorize(actor, action, "admin", case_ref=ref, details={"user": user})
        with transaction(self.writes) as session:
            case = self._get(session, ref)
            current = {m.user_name for m in case.members}
            if remove:
                if user not in current:
                    raise NotFound(f"{user!r} is not assigned to case {ref!r}")
                case.members = [m for m in case.members if m.user_name != user]
            else:
                role = self._check_members(session, {user})[user]
                if user in current:
                    raise InvalidInput(f"{user!r} is already assigned to case {ref!r}")
                case.members.append(
                    CaseMember(user_name=user, added_by=actor.name, added_at=utcnow(), role=role)
                )
            session.flush()
            self.audit.append(
                session,
                actor,
                action,
                case_ref=ref,
                legal_basis=case.legal_basis,
                purpose=case.purpose,
                details={"user": user},
            )
            return CaseInfo.of(case, self._searches(session, case))

    def _check_members(self, session: Session, names: set[str]) -> dict[str, str]:
        """Each name's capacity on a case: ``investigator`` when they hold that role, else
        ``reviewer``; anyone else cannot be assigned."""
        users = {
            u.name: u
            for u in session.scalars(select(User).where(User.name.in_(names), User.active))
        }
        roles = {}
        for name in sorted(names):
            if name not in users:
                raise InvalidInput(f"no active user named {name!r}")
            held = users[name].roles.split(",")
            if not set(held) & set(MEMBER_ROLES):
                raise InvalidInput(
                    f"{name!r} is neither an investigator nor a reviewer and cannot be assigned"
                )
            roles[name] = "investigator" if "investigator" in held else "reviewer"
        return roles

    def close(self, actor: Actor, ref: str) -> CaseInfo:
        self.guard.authorize(actor, "case.close", "investigator", "admin", case_ref=ref)

        with transaction(self.writes) as session:
            case = self._get(session, ref)
            info = CaseInfo.of(case)
            if actor.has("admin") or actor.name in info.investigators:
                case.status, case.closed_at = "closed", utcnow()
                wiped = wipe_probe_templates(session, [case.id], case.closed_at)
                probe_faces = wipe_probe_faces(session, [case.id])
                self.audit.append(
                    session,
                    actor,
                    "case.close",
                    case_ref=ref,
                    legal_basis=case.legal_basis,
                    purpose=case.purpose,
                    details={"probe_templates_wiped": wiped, "probe_faces_wiped": probe_faces},
                )
                return CaseInfo.of(case, self._searches(session, case))
        problem = f"case.close refused: {actor.name} is not assigned to case {ref!r}"
        self.refuse(actor, "case.close", ref, info, problem, "not_assigned")

    def show(self, actor: Actor, ref: str) -> CaseInfo:
        """A case's description: admins, the DPO and auditors see any; investigators and
        reviewers the cases they are assigned to."""
        self.guard.authorize(actor, "case.show", *CASE_READERS, case_ref=ref)
        with self.sessions() as session:
            case = self._get(session, ref)
            info = CaseInfo.of(case, self._searches(session, case))
        if not actor.has("admin", *OVERSIGHT) and actor.name not in info.members:
            problem = f"case.show refused: {actor.name} is not assigned to case {ref!r}"
            self.refuse(actor, "case.show", ref, info, problem, "not_assigned")
        return info

    def list(self, actor: Actor) -> list[CaseInfo]:
        """Every case for admins, the DPO and auditors; an investigator's or a reviewer's
        own cases otherwise."""
        self.guard.authorize(actor, "case.list", *CASE_READERS)
        cases = self.all()
        if actor.has("admin", *OVERSIGHT):
            return cases
        return [c for c in cases if actor.name in c.members]

    def read_access(
        self, actor: Actor, ref: str, action: str, *, record: bool = True, **audit: Any
    ) -> tuple[CaseInfo, str]:
        """May ``actor`` read the records of case ``ref`` (searches, candidates, crops,
        decisions, exports)? Its assigned investigators and reviewers while it is open and
        unexpired; the DPO and auditors always. Returns the case and how access was granted
        (``member``, ``dpo``, ``auditor``); the read is logged (``record``), a refusal too."""
        self.guard.authorize(actor, action, *MEMBER_ROLES, *OVERSIGHT, case_ref=ref, **audit)
        with self.sessions() as session:
            case = session.scalar(select(Case).where(Case.ref == ref))
            info = CaseInfo.of(case, self._searches(session, case)) if case else None
        if info is None:
            problem = f"{action} refused: no case {ref!r}"
            self.audit.record(actor, action, outcome="refused", case_ref=ref, error=problem)
            raise NotFound(f"no case {ref!r}")
        if actor.has(*MEMBER_ROLES) and actor.name in info.members and info.usable:
            via = "member"
        elif actor.has(*OVERSIGHT):
            via = "dpo" if actor.has("dpo") else "auditor"
        elif actor.name not in info.members:
            problem = f"{action} refused: {actor.name} is not assigned to case {ref!r}"
            self.refuse(actor, action, ref, info, problem, "not_assigned", **audit)
        else:
            state = "expired" if info.status == "open" else info.status
            problem = (
                f"{action} refused: case {ref!r} is {state}; its records are for the "
                "data-protection officer and auditors only"
            )
            self.refuse(actor, action, ref, info, problem, f"case_{state}", **audit)
        if record:
            details = audit.pop("details", {}) | {"access": via}
            self.audit.record(
                actor,
                action,
                case_ref=ref,
                legal_basis=info.legal_basis,
                purpose=info.purpose,
                details=details,
                **audit,
            )
        return info, via

    def all(self) -> builtins.list[CaseInfo]:  # ``list`` here is the method above
        """Every case (internal: callers have authorised already)."""
        with self.sessions() as session:
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
        assigned: bool | Literal["member"],
        case: Case | None = None,
    ) -> tuple[str | None, str, CaseInfo | None]:
        """Why ``actor`` may not ``action`` under case ``ref`` now (None when allowed),
        with the refusal's error code and the case. ``assigned``: the actor must be one of
        its investigators (True) or of its investigators and reviewers (``"member"``).
        ``case``: the row, if already loaded."""

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
        allowed = info.members if assigned == "member" else info.investigators
        if assigned and actor.name not in allowed:
            return (
                f"{action} refused: {actor.name} is not assigned to case {ref!r}",
                "not_assigned",
                info,
            )
        if action in CASE_ACTIONS:
            used = info.searches + self._verifications(session, info.ref)
            if used >= info.search_quota:
                return (
                    f"{action} refused: case {ref!r} has used its quota of "
                    f"{info.search_quota} searches and verifications",
                    "quota_exhausted",
                    info,
                )
        return None, "", info

    @staticmethod
    def _verifications(session: Session, ref: str) -> int:
        """1:1 verifications under a case (they use its quota like searches)."""
        return (
            session.scalar(
                select(func.count()).where(
                    AuditEvent.case_ref == ref,
                    AuditEvent.action == "verify",
                    AuditEvent.outcome == "ok",
                )
            )
            or 0
        )

    def require_usable(
        self,
        actor: Actor,
        ref: str | None,
        action: str,
        *,
        assigned: bool | Literal["member"] = True,
        **audit: Any,
    ) -> CaseInfo:
        """The case must exist, be open and unexpired, have the actor assigned (unless
        ``assigned`` is false) and, for searches, quota left. Refusals are logged."""
        with self.sessions() as session:
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
        self.audit.record(
            actor, action, outcome="refused", case_ref=ref, error=problem, **basis, **audit
        )
        raise Refused(problem, code=code)
