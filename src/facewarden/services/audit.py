"""Append-only, chained audit log: every ingest, search, verify, delete and refusal.

Each record's ``hash`` is an HMAC-SHA256 (``chain`` 2), under the audit key, of the record
and the previous record's ``hash``; the audit key is kept out of the database (a 0600 file
or the environment), so whoever can write the database cannot recompute the chain after
removing or editing a record. Records written before the audit key existed (``chain`` 1)
stay verifiable as plain SHA-256; the first MAC'd record names the last of them.

Anchors (sequence number and hash of the newest record, MAC'd) are appended automatically,
every ``audit_anchor_every`` records and at least every ``audit_anchor_seconds``, to a file
outside the database and to the log; ``verify`` checks them, which reveals cutting off the
newest records and a rewrite by someone who holds the audit key as well."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, select, text
from sqlalchemy.orm import Session, sessionmaker

from facewarden.adapters.storage.db import transaction
from facewarden.adapters.storage.tables import AuditEvent
from facewarden.core.actors import Actor
from facewarden.core.errors import AuditFailure, InvalidInput

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
    """Chain 1: the unkeyed SHA-256 of a record (logs written before the audit key)."""
    return hashlib.sha256(canonical({k: fields[k] for k in HASHED_FIELDS}).encode()).hexdigest()


def record_mac(key: bytes, fields: dict[str, Any]) -> str:
    """Chain 2: HMAC-SHA256 under the audit key of the record (its chain version included)."""
    body = canonical({k: fields[k] for k in HASHED_FIELDS} | {"chain": 2})
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def anchor_mac(key: bytes, anchor: dict[str, Any]) -> str:
    body = canonical({k: anchor.get(k) for k in ("seq", "hash", "at")})
    return hmac.new(key, b"facewarden-anchor:" + body.encode(), hashlib.sha256).hexdigest()


log = logging.getLogger("facewarden.audit")


class AnchorFile:
    """The append-only file of anchors (one JSON line each, MAC'd under the audit key)."""

    def __init__(self, path: Path, key: bytes, every: int, seconds: float) -> None:
        self.path = path
        self.key = key
        self.every = every
        self.seconds = seconds

    def read(self) -> list[dict[str, Any]]:
        try:
            text_ = self.path.read_text()
        except FileNotFoundError:
            return []
        out = []
        for n, line in enumerate(text_.splitlines(), 1):
            if not line.strip():
                continue
            try:
                anchor = json.loads(line)
                anchor["line"] = n
                out.append(anchor)
            except ValueError:
                out.append({"line": n, "bad": True})
        return out

    def last(self) -> dict[str, Any] | None:
        """The newest anchor (reads only the file's tail)."""
        try:
            with self.path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 4096))
                lines = fh.read().decode(errors="replace").splitlines()
        except FileNotFoundError:
            return None
        for line in reversed(lines):
            try:
                return json.loads(line)
            except ValueError:
                continue
        return None

    def due(self, seq: int) -> bool:
        last = self.last()
        if last is None:
            return True
        last_seq = int(last.get("seq", 0))
        if seq <= last_seq:
            return False
        if seq // self.every > last_seq // self.every:
            return True
        try:
            age = (datetime.now(UTC) - datetime.fromisoformat(last["at"])).total_seconds()
        except (KeyError, TypeError, ValueError):
            return True
        return age >= self.seconds

    def write(self, seq: int, hash_: str, *, create: bool = False) -> dict[str, Any]:
        """Append an anchor. The file is created only when ``create`` (at ``init`` on a log
        with no MAC'd record yet, or by an explicit, audited restart): a deleted anchor file
        is never silently replaced by a fresh one that would hide what it anchored."""
        anchor: dict[str, Any] = {
            "seq": seq,
            "hash": hash_,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        anchor["mac"] = anchor_mac(self.key, anchor)
        line = json.dumps(anchor, sort_keys=True) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        flags = os.O_WRONLY | os.O_APPEND | (os.O_CREAT if create else 0)
        try:
            fd = os.open(self.path, flags, 0o600)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"the audit anchor file {self.path} is missing: restore it from its copy, or "
                "start a new one with 'facewarden audit anchor --restart' (logged)"
            ) from None
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        log.info("audit anchor seq=%d hash=%s at=%s", seq, hash_, anchor["at"])
        return anchor


CASE_REF_LENGTH = 100
"""Width of the audit log's (and the cases table's) case reference column."""


@dataclass
class ChainReport:
    ok: bool
    records: int
    first_bad_seq: int | None = None
    reason: str | None = None
    mac_records: int = 0


class AuditLog:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        writes: sessionmaker[Session],
        key: bytes | None = None,
        anchors: AnchorFile | None = None,
    ) -> None:
        """``key``: the audit MAC key (None only to read and verify a log of chain-1
        records); ``anchors``: where anchors are written after the commits that make them due."""
        self.sessions = sessions
        self.writes = writes
        self.key = key
        self.anchors = anchors
        if anchors is not None:
            for factory in (sessions, writes):
                event.listen(factory, "after_commit", self._after_commit)
                event.listen(factory, "after_rollback", self._after_rollback)

    def _after_commit(self, session: Session) -> None:
        head = session.info.pop("audit_head", None)
        if head is None or self.anchors is None:
            return
        try:
            if self.anchors.due(head[0]):
                self.anchors.write(*head)
        except OSError as exc:  # the record is committed; the next commit tries again
            log.error("audit anchor could not be written to %s: %s", self.anchors.path, exc)

    @staticmethod
    def _after_rollback(session: Session) -> None:
        session.info.pop("audit_head", None)

    def anchor_now(self, *, create: bool = False) -> dict[str, Any] | None:
        """Write an anchor of the newest record unless the last anchor already names it."""
        if self.anchors is None:
            return None
        head = self.head()
        last = self.anchors.last()
        if head["seq"] == 0 or (last and int(last.get("seq", 0)) >= head["seq"]):
            return None
        return self.anchors.write(head["seq"], head["hash"], create=create)

    def has_mac_records(self) -> bool:
        with self.sessions() as session:
            return (
                session.scalar(select(AuditEvent.seq).where(AuditEvent.chain == 2).limit(1))
                is not None
            )

    def anchor_if_due(self) -> dict[str, Any] | None:
        """Anchor the newest record when the time-based interval has passed (server timer)."""
        if self.anchors is None:
            return None
        head = self.head()
        if head["seq"] and self.anchors.due(head["seq"]):
            return self.anchors.write(head["seq"], head["hash"])
        return None

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
            if self.key is None:
                raise AuditFailure("no audit key: run 'facewarden init'")
            event = AuditEvent(**row, hash=record_mac(self.key, row), chain=2)
            session.add(event)
            session.flush()
            session.info["audit_head"] = (event.seq, event.hash)
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
        auto = self.anchors.read() if self.anchors is not None else []
        path = self.anchors.path if self.anchors is not None else None  # set when ``auto`` is
        for a in auto:
            if a.get("bad") or not isinstance(a.get("seq"), int) or "hash" not in a:
                return ChainReport(
                    False, 0, None, f"anchor file {path} line {a['line']} is damaged"
                )
            if self.key is not None and not hmac.compare_digest(
                str(a.get("mac", "")), anchor_mac(self.key, a)
            ):
                return ChainReport(
                    False,
                    0,
                    int(a["seq"]),
                    f"anchor file {path} line {a['line']} does not verify under "
                    "the audit key (forged, or the audit key was replaced)",
                )
        try:
            given = [
                {"seq": int(a["seq"]), "hash": str(a["hash"])}
                for a in anchors or []
                if int(a["seq"]) > 0
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput("an anchor needs a sequence number 'seq' and a 'hash'") from exc
        wanted: dict[int, str] = {}
        for a in [*auto, *given]:
            seq = int(a["seq"])
            if wanted.setdefault(seq, a["hash"]) != a["hash"]:
                return ChainReport(False, 0, seq, f"two anchors disagree on record {seq}")
        seen: dict[int, str] = {}
        report = self._walk(wanted, seen)
        if report.ok and report.mac_records and not auto and self.anchors is not None:
            return ChainReport(
                False,
                report.records,
                None,
                f"the anchor file {self.anchors.path} is missing or empty, though the log "
                "holds MAC'd records (an anchor is written when the MAC chain starts)",
            )
        previous = 0
        for seq in sorted(wanted):
            if seq not in seen:
                if not report.ok and report.first_bad_seq is not None:
                    return report  # a break in the chain comes first
                return ChainReport(
                    False,
                    report.records,
                    min(seq, report.records + 1),
                    f"truncated: anchored record {seq} is missing "
                    f"(the log ends at record {report.records})",
                )
            if seen[seq] != wanted[seq]:
                return ChainReport(
                    False,
                    report.records,
                    previous + 1,
                    f"records {previous + 1} to {seq} were rewritten: record {seq} does not "
                    "match its anchored hash",
                )
            previous = seq
        return report

    def _walk(self, wanted: dict[int, str], seen: dict[int, str]) -> ChainReport:
        """Walk the chain; records the anchored records' hashes in ``seen`` up to the first
        break (so an anchor check can tell a rewrite before the break)."""
        expected_seq, prev, count, macs = 1, GENESIS, 0, 0

        def broken(seq: int, reason: str) -> ChainReport:
            return ChainReport(False, count, seq, reason, mac_records=macs)

        with self.sessions() as session:
            rows = session.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars()
            for ev in rows:
                count += 1
                fields = {k: getattr(ev, k) for k in HASHED_FIELDS}
                if ev.seq != expected_seq:
                    return broken(ev.seq, f"sequence gap: expected {expected_seq}, found {ev.seq}")
                if ev.prev_hash != prev:
                    return broken(ev.seq, "previous-hash link broken")
                if ev.chain == 2:
                    if self.key is None:
                        return broken(ev.seq, "MAC'd record, but no audit key to check it")
                    if not hmac.compare_digest(record_mac(self.key, fields), ev.hash):
                        return broken(
                            ev.seq,
                            "record content does not match its hash (HMAC under the audit key)",
                        )
                    macs += 1
                elif ev.chain == 1 and not macs:
                    if record_hash(fields) != ev.hash:
                        return broken(ev.seq, "record content does not match its hash")
                else:
                    return broken(
                        ev.seq,
                        f"record has chain version {ev.chain} after MAC'd records (a rewrite "
                        "with the unkeyed hash)",
                    )
                if ev.seq in wanted:
                    seen[ev.seq] = ev.hash
                prev, expected_seq = ev.hash, expected_seq + 1
        if count and not macs and self.key is not None and self.anchors is not None:
            return broken(
                count,
                "no record is MAC'd although an audit key is configured (the log was "
                "rewritten with the unkeyed hash)",
            )
        return ChainReport(True, count, mac_records=macs)

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
        until: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Records matching every given filter (``action`` matches a prefix: ``case`` finds
        ``case.open`` and ``case.close``; ``since`` and ``until`` bound the time, both
        inclusive), oldest first unless ``newest_first``."""
        with self.sessions() as session:
            order = AuditEvent.seq.desc() if newest_first else AuditEvent.seq
            q = select(AuditEvent).order_by(order)
            if case_ref:
                q = q.where(AuditEvent.case_ref == case_ref)
            if since:
                q = q.where(AuditEvent.ts >= since.astimezone(UTC).isoformat())
            if until:
                end = until.astimezone(UTC).isoformat(timespec="microseconds")
                q = q.where(AuditEvent.ts <= end)
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
