"""Two-person confirmation: a candidate becomes an identification only when an assigned
investigator and a different person holding the reviewer role both confirm it."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from facewarden.adapters.storage.db import transaction
from facewarden.adapters.storage.tables import (
    Case,
    CaseSearch,
    Confirmation,
    Face,
    Media,
    SearchHit,
    Source,
)
from facewarden.core.actors import Actor
from facewarden.core.clock import as_utc, utcnow
from facewarden.core.errors import InvalidInput, NotFound
from facewarden.core.limits import check_id, check_text
from facewarden.services.access import RoleGuard
from facewarden.services.audit import AuditLog
from facewarden.services.cases import CaseService

DECISIONS = ("confirm", "reject")


@dataclass
class CandidateState:
    search_id: int
    face_id: int
    status: str
    """``pending``, ``identified`` or ``rejected``."""
    decisions: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def investigators_of(case: Case) -> list[str]:
    """The people assigned to a case as investigators (not as reviewers)."""
    return [m.user_name for m in case.members if m.role != "reviewer"]


def status_of(decisions: list[Confirmation], investigators: set[str]) -> str:
    """Rejected by anyone; identified when an assigned investigator and a different
    reviewer confirmed; pending otherwise."""
    if any(d.decision == "reject" for d in decisions):
        return "rejected"
    confirmers = [d for d in decisions if d.decision == "confirm"]
    for a in confirmers:
        if a.user_name not in investigators:
            continue
        for b in confirmers:
            if b.user_name != a.user_name and "reviewer" in b.roles.split(","):
                return "identified"
    return "pending"


class ConfirmationService:
    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        writes: sessionmaker[Session],
        audit: AuditLog,
        guard: RoleGuard,
        cases: CaseService,
    ) -> None:
        self.sessions = sessions
        self.writes = writes
        self.audit = audit
        self.guard = guard
        self.cases = cases

    def decide(
        self,
        actor: Actor,
        search_id: int,
        face_id: int,
        decision: str = "confirm",
        note: str | None = None,
    ) -> CandidateState:
        """Record one person's confirmation or rejection of one candidate of one search."""

        check_text(note, "note")
        check_id(search_id, "search id")
        check_id(face_id, "face id")
        if decision not in DECISIONS:
            raise InvalidInput(f"decision must be one of {', '.join(DECISIONS)}")
        action = f"candidate.{decision}"
        target = {"search_id": search_id, "face_id": face_id}
        self.guard.authorize(actor, action, "investigator", "reviewer", details=target)
        cases = self.cases
        info = None
        problem = code = None
        with transaction(self.writes) as session:
            search, case = self._search(session, search_id)
            # Assignment first: someone else's case says nothing about its candidates.
            problem, code, info = cases.problem(session, actor, case.ref, action, assigned="member")
            if problem is None:
                hit = session.scalar(
                    select(SearchHit).where(
                        SearchHit.search_id == search_id, SearchHit.face_id == face_id
                    )
                )
                if hit is None:
                    raise InvalidInput(f"face {face_id} was not a candidate of search {search_id}")
                if session.get(Face, face_id) is None:
                    raise NotFound(f"face {face_id} is no longer held (erased or expired)")
            decisions = self._decisions(session, search_id, face_id)
            status = status_of(decisions, set(info.investigators) if info else set())
            if problem is None:
                problem, code = self._rule(actor, decisions, status, face_id)
            if problem is None:
                if info is None:  # problem() returns the case whenever it allows
                    raise NotFound(f"no case {case.ref!r}")
                event = self.audit.append(
                    session,
                    actor,
                    action,
                    case_ref=case.ref,
                    legal_basis=case.legal_basis,
                    purpose=case.purpose,
                    probe_hash=search.probe_sha256,
                    details=target | {"note": note},
                )
                session.add(
                    Confirmation(
                        search_id=search_id,
                        face_id=face_id,
                        decision=decision,
                        user_name=actor.name,
                        roles=",".join(sorted(actor.roles)),
                        note=note,
                        decided_at=utcnow(),
                        audit_seq=event.seq,
                    )
                )
                session.flush()
                return self._state(session, search_id, face_id, info.investigators)
        assert problem and code
        cases.refuse(actor, action, case.ref, info, problem, code, details=target)

    @staticmethod
    def _rule(
        actor: Actor, decisions: list[Confirmation], status: str, face_id: int
    ) -> tuple[str | None, str | None]:
        if any(d.user_name == actor.name for d in decisions):
            return (
                f"{actor.name} already decided on face {face_id}: the second confirmation "
                "must come from a different person",
                "same_person",
            )
        if status != "pending":
            return f"face {face_id} is already {status}", f"already_{status}"
        return None, None

    def state(self, search_id: int, face_id: int) -> CandidateState:
        """A candidate's state (internal: callers have authorised already)."""
        with self.sessions() as session:
            _, case = self._search(session, search_id)
            return self._state(session, search_id, face_id, investigators_of(case))

    def _state(
        self, session: Session, search_id: int, face_id: int, investigators: list[str]
    ) -> CandidateState:

        decisions = self._decisions(session, search_id, face_id)
        return CandidateState(
            search_id,
            face_id,
            status_of(decisions, set(investigators)),
            [
                {
                    "user": d.user_name,
                    "roles": d.roles.split(","),
                    "decision": d.decision,
                    "note": d.note,
                    "at": as_utc(d.decided_at).isoformat(),
                    "audit_seq": d.audit_seq,
                }
                for d in decisions
            ],
        )

    @staticmethod
    def _decisions(session: Session, search_id: int, face_id: int) -> list[Confirmation]:
        return list(
            session.scalars(
                select(Confirmation)
                .where(Confirmation.search_id == search_id, Confirmation.face_id == face_id)
                .order_by(Confirmation.id)
            )
        )

    @staticmethod
    def _search(session: Session, search_id: int) -> tuple[CaseSearch, Case]:
        row = session.execute(
            select(CaseSearch, Case)
            .join(Case, Case.id == CaseSearch.case_id)
            .where(CaseSearch.id == search_id)
        ).first()
        if row is None:
            raise NotFound(f"no search {search_id}")
        return row[0], row[1]

    def candidates(self, actor: Actor, ref: str) -> list[CandidateState]:
        """Every candidate of a case that someone has decided on, with its state (for the
        case's assigned people while it is open; the DPO and auditors always; logged)."""
        self.cases.read_access(actor, ref, "case.candidates")
        return self.states(ref)

    def searches(self, actor: Actor, ref: str) -> list[dict[str, Any]]:
        """The searches of a case, newest first, each with its candidates and their state
        (for the case's assigned people while it is open; the DPO and auditors always;
        logged)."""
        self.cases.read_access(actor, ref, "case.searches")
        with self.sessions() as session:
            case = self.cases._get(session, ref)
            members = set(investigators_of(case))
            searches = list(
                session.scalars(
                    select(CaseSearch)
                    .where(CaseSearch.case_id == case.id)
                    .order_by(CaseSearch.id.desc())
                )
            )
            ids = [s.id for s in searches]
            hits: dict[int, list[SearchHit]] = defaultdict(list)
            for h in session.scalars(
                select(SearchHit)
                .where(SearchHit.search_id.in_(ids))
                .order_by(SearchHit.probe_face, SearchHit.rank)
            ):
                hits[h.search_id].append(h)
            decided: dict[tuple[int, int], list[Confirmation]] = defaultdict(list)
            for d in session.scalars(
                select(Confirmation)
                .where(Confirmation.search_id.in_(ids))
                .order_by(Confirmation.id)
            ):
                decided[(d.search_id, d.face_id)].append(d)
            return [
                {
                    "search_id": s.id,
                    "probe": s.probe_name,
                    "probe_sha256": s.probe_sha256,
                    "searched_by": s.searched_by,
                    "searched_at": as_utc(s.searched_at).isoformat(),
                    "audit_seq": s.audit_seq,
                    "faces": s.faces,
                    "candidates": [
                        {
                            "probe_face": h.probe_face,
                            "face_id": h.face_id,
                            "rank": h.rank,
                            "distance": h.distance,
                            "status": status_of(decided[(s.id, h.face_id)], members),
                        }
                        for h in hits[s.id]
                    ],
                }
                for s in searches
            ]

    def states(self, ref: str) -> list[CandidateState]:
        """Decided candidates of a case (internal: callers have authorised already)."""
        with self.sessions() as session:
            case = self.cases._get(session, ref)
            members = investigators_of(case)
            pairs = session.execute(
                select(Confirmation.search_id, Confirmation.face_id)
                .join(CaseSearch, CaseSearch.id == Confirmation.search_id)
                .where(CaseSearch.case_id == case.id)
                .distinct()
                .order_by(Confirmation.search_id, Confirmation.face_id)
            ).all()
            return [self._state(session, s, f, members) for s, f in pairs]

    def export(
        self, actor: Actor, ref: str, *, search_id: int | None = None, face_id: int | None = None
    ) -> list[dict[str, Any]]:
        """Identified results of a case with provenance. Asking for a candidate that is not
        identified is refused: exports require the two-person confirmation. The case's
        assigned investigators and reviewers export while it is open; once it is closed or
        expired, only the DPO or an auditor can (e.g. evidence for court), logged."""
        target = {"search_id": search_id, "face_id": face_id}
        info, via = self.cases.read_access(actor, ref, "case.export", record=False, details=target)
        states = [s for s in self.states(ref) if s.status == "identified"]
        if face_id is not None:
            states = [
                s
                for s in states
                if s.face_id == face_id and (search_id is None or s.search_id == search_id)
            ]
            if not states:
                self.cases.refuse(
                    actor,
                    "case.export",
                    ref,
                    info,
                    f"case.export refused: face {face_id} is not an identification "
                    "(two different people, an investigator and a reviewer, must confirm it)",
                    "not_identified",
                    details=target,
                )
        rows = self._provenance(states)
        self.audit.record(
            actor,
            "case.export",
            case_ref=ref,
            legal_basis=info.legal_basis,
            purpose=info.purpose,
            details=target
            | {
                "identifications": [[r["search_id"], r["face_id"]] for r in rows],
                "access": via,
            },
        )
        return rows

    def _provenance(self, states: list[CandidateState]) -> list[dict[str, Any]]:

        rows = []
        with self.sessions() as session:
            for st in states:
                row = session.execute(
                    select(SearchHit, CaseSearch, Media, Source)
                    .join(CaseSearch, CaseSearch.id == SearchHit.search_id)
                    .join(Face, Face.id == SearchHit.face_id)
                    .join(Media, Media.id == Face.media_id)
                    .join(Source, Source.id == Media.source_id)
                    .where(SearchHit.search_id == st.search_id, SearchHit.face_id == st.face_id)
                ).first()
                if row is None:  # erased or expired since: nothing of it may leave
                    continue
                hit, search, media, source = row
                rows.append(
                    {
                        "search_id": st.search_id,
                        "face_id": st.face_id,
                        "probe_sha256": search.probe_sha256,
                        "searched_at": as_utc(search.searched_at).isoformat(),
                        "searched_by": search.searched_by,
                        "rank": hit.rank,
                        "distance": hit.distance,
                        "media_id": media.id,
                        "media_path": media.path,
                        "media_sha256": media.sha256,
                        "source": source.name,
                        "jurisdiction": source.jurisdiction,
                        "lawful_basis": source.lawful_basis,
                        "confirmed_by": [d["user"] for d in st.decisions],
                    }
                )
        return rows
