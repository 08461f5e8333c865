"""Append-only, hash-chained audit log: every ingest, search, verify, delete and refusal."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from facewarden.adapters.storage.db import transaction
from facewarden.adapters.storage.tables import AuditEvent
from facewarden.core.actors import Actor
from facewarden.core.errors import AuditFailure

GENESIS = "0" * 64
HASHED_FIELDS = (
    "seq",
    "ts",
    "actor",
    "role",
    "action",
    "case_ref",
    "legal_basis",
    "purpose",
    "probe_hash",
    "gallery_size",
    "model_id",
    "threshold",
    "details",
    "outcome",
    "error",
    "prev_hash",
)
_PG_LOCK_KEY = 0x46574144  # "FWAD": serialises appends across connections on PostgreSQL


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def record_hash(fields: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({k: fields[k] for k in HASHED_FIELDS}).encode()).hexdigest()


CASE_REF_LENGTH = 100
"""Width of the audit log's (and the cases table's) case reference column."""


@dataclass
class ChainReport:
    ok: bool
    records: int
    first_bad_seq: int | None = None
    reason: str | None = None


class AuditLog:
    def __init__(self, sessions: sessionmaker[Session], writes: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.writes = writes

    def append(
        self,
        session: Session,
        actor: Actor | str,
        action: str,
        *,
        outcome: str = "ok",
        details: dict[str, Any] | None = None,
        **fields: Any,
    ) -> AuditEvent:
        """Append inside the caller's transaction, so the record and the change commit together."""
        try:
            if session.get_bind().dialect.name == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            last = session.execute(
                select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
            ).first()
            name = actor.name if isinstance(actor, Actor) else actor
            role = actor.role_label if isinstance(actor, Actor) else None
            ref = fields.get("case_ref")
            if isinstance(ref, str) and len(ref) > CASE_REF_LENGTH:
                # A refused request may name a case reference no case can have: keep it
                # whole in the details so the record is written (and faithful) anyway.
                details = (details or {}) | {"case_ref_full": ref}
                fields["case_ref"] = ref[: CASE_REF_LENGTH - 1] + "…"
            row: dict[str, Any] = {
                "seq": (last.seq + 1) if last else 1,
                "ts": datetime.now(UTC).isoformat(timespec="microseconds"),
                "actor": name,
                "role": fields.pop("role", role),
                "action": action,
                "case_ref": None,
                "legal_basis": None,
                "purpose": None,
                "probe_hash": None,
                "gallery_size": None,
                "model_id": None,
                "threshold": None,
                "details": canonical(details or {}),
                "outcome": outcome,
                "error": None,
                "prev_hash": last.hash if last else GENESIS,
            }
            unknown = set(fields) - set(row)
            if unknown:
                raise TypeError(f"unknown audit fields {sorted(unknown)}")
            row.update(fields)
            event = AuditEvent(**row, hash=record_hash(row))
            session.add(event)
            session.flush()
            return event
        except Exception as exc:
            raise AuditFailure(f"audit record could not be written: {exc}") from exc

    def record(self, actor: Actor | str, action: str, **kwargs: Any) -> AuditEvent:
        """Append in a transaction of its own (refusals, failures, and read-only operations)."""
        try:
            with transaction(self.writes) as session:
                return self.append(session, actor, action, **kwargs)
        except AuditFailure:
            raise
        except Exception as exc:
            raise AuditFailure(f"audit record could not be written: {exc}") from exc

    def head(self) -> dict[str, Any]:
        """The newest record's sequence number and hash: an anchor to keep outside the
        database (a printout, a ticket, a notary), so that cutting off the newest records,
        which a hash chain alone cannot reveal, is detected by ``verify(anchors=...)``."""
        with self.sessions() as session:
            last = session.execute(
                select(AuditEvent.seq, AuditEvent.hash, AuditEvent.ts)
                .order_by(AuditEvent.seq.desc())
                .limit(1)
            ).first()
        if last is None:
            return {"seq": 0, "hash": GENESIS, "ts": None}
        return {"seq": last.seq, "hash": last.hash, "ts": last.ts}

    def verify(self, anchors: list[dict[str, Any]] | None = None) -> ChainReport:
        """Walk the chain: any edited, deleted, inserted or reordered record breaks it, and
        each anchor's record must still be there with the same hash."""
        wanted = {int(a["seq"]): a["hash"] for a in anchors or [] if int(a["seq"]) > 0}
        seen: dict[int, str] = {}
        report = self._walk(wanted, seen)
        if not report.ok:
            return report
        for seq in sorted(wanted):
            if seq not in seen:
                return ChainReport(
                    False,
                    report.records,
                    seq,
                    f"truncated: anchored record {seq} is missing "
                    f"(the log ends at record {report.records})",
                )
            if seen[seq] != wanted[seq]:
                return ChainReport(
                    False, report.records, seq, "record does not match its anchored hash"
                )
        return report

    def _walk(self, wanted: dict[int, str], seen: dict[int, str]) -> ChainReport:
        expected_seq, prev, count = 1, GENESIS, 0
        with self.sessions() as session:
            rows = session.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars()
            for ev in rows:
                count += 1
                fields = {k: getattr(ev, k) for k in HASHED_FIELDS}
                if ev.seq != expected_seq:
                    return ChainReport(
                        False,
                        count,
                        ev.seq,
                        f"sequence gap: expected {expected_seq}, found {ev.seq}",
                    )
                if ev.prev_hash != prev:
                    return ChainReport(False, count, ev.seq, "previous-hash link broken")
                if record_hash(fields) != ev.hash:
                    return ChainReport(
                        False, count, ev.seq, "record content does not match its hash"
                    )
                if ev.seq in wanted:
                    seen[ev.seq] = ev.hash
                prev, expected_seq = ev.hash, expected_seq + 1
        return ChainReport(True, count)

    def events(
        self,
        case_ref: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
        *,
        action: str | None = None,
        actor: str | None = None,
        outcome: str | None = None,
        before_seq: int | None = None,
        newest_first: bool = False,
    ) -> list[dict[str, Any]]:
        """Records matching every given filter (``action`` matches a prefix: ``case`` finds
        ``case.open`` and ``case.close``), oldest first unless ``newest_first``."""
        with self.sessions() as session:
            order = AuditEvent.seq.desc() if newest_first else AuditEvent.seq
            q = select(AuditEvent).order_by(order)
            if case_ref:
                q = q.where(AuditEvent.case_ref == case_ref)
            if since:
                q = q.where(AuditEvent.ts >= since.astimezone(UTC).isoformat())
            if action:
                q = q.where(
                    (AuditEvent.action == action) | AuditEvent.action.startswith(action + ".")
                )
            if actor:
                q = q.where(AuditEvent.actor == actor)
            if outcome:
                q = q.where(AuditEvent.outcome == outcome)
            if before_seq:
                q = q.where(AuditEvent.seq < before_seq)
            if limit:
                q = q.limit(limit)
            out = []
            for ev in session.execute(q).scalars():
                row = {k: getattr(ev, k) for k in (*HASHED_FIELDS, "hash")}
                row["details"] = json.loads(ev.details)
                out.append(row)
            return out
