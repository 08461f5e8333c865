"""Oversight: reading, verifying and exporting the audit log, for the people allowed to.

``AuditLog`` is the engine's own writer and reader; this service is what users reach through
the CLI, the HTTP API and the console, with the role check and a record of the access.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Any

from facewarden.core.actors import Actor
from facewarden.core.durations import bounded_instant
from facewarden.core.errors import InvalidInput
from facewarden.services.access import RoleGuard
from facewarden.services.audit import AuditLog

AUDIT_READERS = ("auditor", "admin", "dpo")
EXPORT_FORMATS = ("jsonl", "csv")


class OversightService:
    def __init__(
        self,
        *,
        audit: AuditLog,
        guard: RoleGuard,
    ) -> None:
        self.audit = audit
        self.guard = guard

    def events(
        self,
        actor: Actor,
        *,
        case_ref: str | None = None,
        since: datetime | None = None,
        action: str | None = None,
        user: str | None = None,
        outcome: str | None = None,
        before_seq: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
        until: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Audit records matching the filters (``since`` and ``until`` inclusive); the read
        itself is logged (``audit.read``)."""
        since = bounded_instant(since, "since") if since is not None else None
        until = bounded_instant(until, "until") if until is not None else None
        if since and until and until < since:
            raise InvalidInput("the time range ends before it starts (until < since)")
        filters = {
            "case_ref": case_ref,
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
            "action": action,
            "user": user,
            "outcome": outcome,
            "before_seq": before_seq,
            "limit": limit,
        }
        filters = {k: v for k, v in filters.items() if v is not None}
        self.guard.authorize(actor, "audit.read", *AUDIT_READERS, details=filters)
        rows = self.audit.events(
            case_ref,
            since,
            limit,
            action=action,
            actor=user,
            outcome=outcome,
            before_seq=before_seq,
            newest_first=newest_first,
            until=until,
        )
        self.audit.record(actor, "audit.read", details=filters | {"records": len(rows)})
        return rows

    def export(
        self,
        actor: Actor,
        fmt: str = "jsonl",
        *,
        case_ref: str | None = None,
        since: datetime | None = None,
    ) -> str:
        """The whole (or filtered) log, oldest first, as JSON lines or CSV (details as JSON)."""
        if fmt not in EXPORT_FORMATS:
            raise InvalidInput(f"export format must be one of {', '.join(EXPORT_FORMATS)}")
        rows = self.events(actor, case_ref=case_ref, since=since)
        if fmt == "jsonl":
            return "".join(json.dumps(r, default=str) + "\n" for r in rows)
        buf = io.StringIO()
        writer = csv.writer(buf)
        if rows:
            writer.writerow(rows[0].keys())
        for r in rows:
            writer.writerow([json.dumps(v) if isinstance(v, dict) else v for v in r.values()])
        return buf.getvalue()

    def verify(self, actor: Actor, anchors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Walk the hash chain (and check anchors); the result is logged."""
        self.guard.authorize(actor, "audit.verify", *AUDIT_READERS)
        report = self.audit.verify(anchors)
        result = {
            "ok": report.ok,
            "records": report.records,
            "first_bad_seq": report.first_bad_seq,
            "reason": report.reason,
            "anchors": len(anchors or []),
        }
        self.audit.record(
            actor, "audit.verify", outcome="ok" if report.ok else "broken", details=result
        )
        return result

    def restart_anchors(self, actor: Actor) -> dict[str, Any]:
        """Start a new anchor file when the old one is lost for good (a destroyed volume).
        Recorded in the log first, so the restart is itself anchored and MAC'd; what the lost
        file anchored can no longer be checked, which the record says."""
        self.guard.authorize(actor, "audit.anchor_restart", "auditor", "admin")
        anchors = self.audit.anchors
        if anchors is None or anchors.path.exists():
            raise InvalidInput(
                f"the anchor file {anchors.path if anchors else '(none)'} exists: a restart "
                "is only for a lost anchor file"
            )
        self.audit.record(
            actor,
            "audit.anchor_restart",
            details={"anchor_file": str(anchors.path), "previous_head": self.audit.head()},
        )
        head = self.audit.head()
        return anchors.write(head["seq"], head["hash"], create=True)

    def head(self, actor: Actor) -> dict[str, Any]:
        """The newest record's sequence number and hash, to keep as an anchor elsewhere."""
        self.guard.authorize(actor, "audit.anchor", *AUDIT_READERS)
        return self.audit.head()
