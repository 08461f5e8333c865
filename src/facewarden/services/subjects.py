"""Data subjects' rights: access (a report of everything held about a face) and erasure
(delete it, remember it on an encrypted suppression list, hand back a receipt).

The selfie is used once and never stored: only its hash is kept with the request record,
and, for an erasure, its template and the erased faces' templates (encrypted) as the
suppression entry.

An erasure looks for the person as far as a search would (the search threshold), not only
within the strict subject threshold: faces within the strict threshold are erased, the ones
between the two thresholds are listed for the DPO's review and withheld from every search
until the DPO erases or releases them. Search withholds every face within the search
threshold of a suppression template (``SubjectService.withheld``), so no search with any
photo of the erased person returns one of their faces, including faces ingested later.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from facewarden.adapters.storage.db import erasure_lock, transaction
from facewarden.adapters.storage.tables import (
    AuditEvent,
    Case,
    CaseSearch,
    Face,
    Media,
    SearchHit,
    Source,
    SubjectRequest,
)
from facewarden.config import Settings
from facewarden.core.actors import Actor
from facewarden.core.binding import suppression_aad, template_aad
from facewarden.core.clock import as_utc, utcnow
from facewarden.core.errors import FacewardenError, InvalidInput, NoFaceFound, NotFound
from facewarden.core.limits import (
    RECEIPT_KINDS,
    RECEIPTS_PAGE,
    RECEIPTS_PAGE_MAX,
    REFERENCE_CHARS,
    check_id,
    check_text,
)
from facewarden.core.ports import ReportRenderer
from facewarden.core.schemas import Candidate, FaceTemplate
from facewarden.services.access import RoleGuard
from facewarden.services.audit import AuditLog, canonical
from facewarden.services.gallery import GalleryService
from facewarden.services.index import IndexService
from facewarden.services.keyring import Keyring
from facewarden.services.keys import KeyService
from facewarden.services.models import Models
from facewarden.services.search import SearchService

SUBJECT_TOP_K = 1000
# The audit action of each kind of request receipt, and the receipts that are an audit record
# only (no request row).
REQUEST_ACTIONS = {
    "access": "subject.access",
    "erasure": "subject.erase",
    "erasure-review": "subject.erase.review",
}
LOGGED_ACTIONS = {
    "restriction": "subject.restrict",
    "lifted": "subject.unrestrict",
    "purge": "index.purge",
}
RECEIPT_ACTIONS = (*REQUEST_ACTIONS.values(), *LOGGED_ACTIONS.values())
"""Every audit action a receipt is written under (a rights request's record is one of the
request actions)."""


class SubjectService:
    def __init__(
        self,
        *,
        settings: Settings,
        sessions: sessionmaker[Session],
        writes: sessionmaker[Session],
        audit: AuditLog,
        guard: RoleGuard,
        keyring: Keyring,
        models: Models,
        keys: KeyService,
        index: IndexService,
        gallery: GalleryService,
        search: SearchService,
        reports: ReportRenderer,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.writes = writes
        self.audit = audit
        self.guard = guard
        self.keyring = keyring
        self.models = models
        self.keys = keys
        self.index = index
        self.gallery = gallery
        self.search = search
        self.reports = reports

    def report_html(self, report: dict[str, Any]) -> str:
        """An access report (``access``, or ``SubjectRecordService.access``) as the
        self-contained HTML page to review and send (every value escaped)."""
        return self.reports.subject_report_html(report)

    # -- matching ------------------------------------------------------------------------
    def _selfie(self, actor: Actor, action: str, selfie: bytes) -> tuple[str, FaceTemplate]:
        """The one face of the selfie; several faces or none is a clear error (logged)."""
        sha = hashlib.sha256(selfie).hexdigest()
        try:
            faces = self.models.analyse_probe(selfie).faces
            if not faces:
                raise NoFaceFound("no face found in the selfie")
            if len(faces) > 1:
                raise InvalidInput(
                    f"the selfie shows {len(faces)} faces: it must show only the requester"
                )
        except FacewardenError as exc:
            self.audit.record(actor, action, outcome="error", probe_hash=sha, error=exc.message)
            raise
        return sha, faces[0]

    def _candidates(self, face: FaceTemplate, threshold: float) -> list[Candidate]:
        """Every face of the person the database holds: the index is first reconciled with
        the database (faces other processes, or an ingest thread, committed and not yet
        indexed here), then searched exactly, not approximately."""
        self.index.sync()
        return self.search.match(
            face, SUBJECT_TOP_K, threshold, searchable_only=False, exact=True
        ).candidates

    def _found(
        self, faces: Sequence[FaceTemplate], threshold: float
    ) -> dict[int, tuple[float, Candidate]]:
        """Every face within ``threshold`` of any of the selfies: face id -> (nearest
        distance, candidate)."""
        found: dict[int, tuple[float, Candidate]] = {}
        for face in faces:
            for c in self._candidates(face, threshold):
                if c.face_id not in found or c.distance < found[c.face_id][0]:
                    found[c.face_id] = (c.distance, c)
        return dict(sorted(found.items(), key=lambda kv: (kv[1][0], kv[0])))

    def _templates(self, session, face_ids: list[int]) -> np.ndarray:
        """Decrypted templates of ``face_ids`` (those that exist), in the caller's session."""
        if not face_ids:
            return np.zeros((0, 128), np.float32)
        rows = session.execute(
            select(Face.template, Face.key_id, Face.face_index, Media.sha256)
            .join(Media, Media.id == Face.media_id)
            .where(Face.id.in_(face_ids))
        ).all()
        decrypt = self.keyring.cipher.decrypt_template
        vecs = [decrypt(r.template, template_aad(r.sha256, r.face_index), r.key_id) for r in rows]
        return np.stack(vecs) if vecs else np.zeros((0, 128), np.float32)

    def _threshold(self, threshold: float | None) -> float:
        threshold = self.settings.subject_threshold if threshold is None else threshold
        if not 0 < threshold <= 1.0:
            raise InvalidInput("the subject threshold must be in (0, 1]")
        return threshold

    def _details(self, candidates: list[Candidate]) -> list[dict[str, Any]]:
        """Each candidate with its provenance, retention and the searches that returned it."""

        rows = []
        with self.sessions() as session:
            for c in candidates:
                media, source = session.execute(
                    select(Media, Source)
                    .join(Source, Source.id == Media.source_id)
                    .where(Media.id == c.media_id)
                ).one()
                searches = session.execute(
                    select(SearchHit, CaseSearch, Case.ref)
                    .join(CaseSearch, CaseSearch.id == SearchHit.search_id)
                    .join(Case, Case.id == CaseSearch.case_id)
                    .where(
                        SearchHit.media_sha256 == media.sha256,
                        SearchHit.face_index == c.face_index,
                    )
                    .order_by(CaseSearch.searched_at)
                ).all()
                rows.append(
                    {
                        "face_id": c.face_id,
                        "distance": c.distance,
                        "box": c.box,
                        "media_id": media.id,
                        "media_path": media.path,
                        "media_sha256": media.sha256,
                        "source": source.name,
                        "lawful_basis": source.lawful_basis,
                        "purpose": source.purpose,
                        "jurisdiction": source.jurisdiction,
                        "ingested_at": as_utc(media.ingested_at).isoformat(),
                        "retained_until": as_utc(media.expires_at).isoformat(),
                        "restricted": media.restricted,
                        "searches": [
                            {
                                "case": ref,
                                "search_id": s.id,
                                "searched_at": as_utc(s.searched_at).isoformat(),
                                "searched_by": s.searched_by,
                                "rank": h.rank,
                                "distance": h.distance,
                                "audit_seq": s.audit_seq,
                            }
                            for h, s, ref in searches
                        ],
                    }
                )
        return rows

    # -- access --------------------------------------------------------------------------
    def access(
        self,
        actor: Actor,
        selfie: bytes,
        *,
        reference: str | None = None,
        threshold: float | None = None,
    ) -> dict[str, Any]:
        """Everything held about the person in the selfie, for the DPO to review and send."""

        threshold = self._threshold(threshold)
        check_text(reference, "reference", REFERENCE_CHARS)
        self.guard.authorize(actor, "subject.access", "dpo", details={"reference": reference})
        received = utcnow()
        sha, face = self._selfie(actor, "subject.access", selfie)
        matches = self._details(self._candidates(face, threshold))
        report: dict[str, Any] = {
            "kind": "access",
            "reference": reference,
            "selfie_sha256": sha,
            "threshold": threshold,
            "model": self.models.model_id,
            "received_at": received.isoformat(),
            "handled_by": actor.name,
            "review_note": (
                "Candidates found by face comparison at a strict threshold. A person must "
                "check each one before the report is sent: a wrong candidate is someone "
                "else's data."
            ),
            "matches": matches,
        }
        return self.record_access(
            actor,
            report,
            received=received,
            requester=sha,
            threshold=threshold,
            details={"reference": reference},
            probe_hash=sha,
            audit_threshold=threshold,
        )

    def record_access(
        self,
        actor: Actor,
        report: dict[str, Any],
        *,
        received: datetime,
        requester: str,
        threshold: float,
        summary: dict[str, Any] | None = None,
        details: dict[str, Any] | None = None,
        probe_hash: str | None = None,
        audit_threshold: float | None = None,
    ) -> dict[str, Any]:
        """Complete an access request (by selfie here, by subject reference in
        ``SubjectRecordService``): keep it as a ``SubjectRequest`` whose receipt counts the
        report's matches, and log it (``subject.access``) in the same transaction; returns
        ``report`` with its completion time, request id and audit sequence number.

        ``requester``: the selfie's hash, or ``subject:<id>``; ``summary``: fields the
        receipt starts with; ``details``: further audit details; ``probe_hash`` and
        ``audit_threshold`` go into the audit record's columns."""
        matches = report["matches"]
        with transaction(self.writes) as session:
            completed = utcnow()
            report["completed_at"] = completed.isoformat()
            receipt = (summary or {}) | {
                "matches": len(matches),
                "face_ids": [m["face_id"] for m in matches],
                "searches": sum(len(m["searches"]) for m in matches),
            }
            request = SubjectRequest(
                kind="access",
                reference=report["reference"],
                selfie_sha256=requester,
                threshold=threshold,
                handled_by=actor.name,
                received_at=received,
                completed_at=completed,
                receipt=receipt,
            )
            session.add(request)
            session.flush()
            event = self.audit.append(
                session,
                actor,
                "subject.access",
                probe_hash=probe_hash,
                threshold=audit_threshold,
                model_id=self.models.model_id,
                details=receipt | {"request_id": request.id} | (details or {}),
            )
            request.audit_seq = event.seq
            report["request_id"] = request.id
            report["audit_seq"] = event.seq
        return report

    # -- erasure -------------------------------------------------------------------------
    def _review_radius(self, strict: float) -> float:
        """How far an erasure looks: as far as a search would (never less than strict)."""
        return max(strict, self.settings.threshold)

    def _selfies(
        self, actor: Actor, action: str, selfie: bytes | Sequence[bytes]
    ) -> tuple[list[str], list[FaceTemplate]]:
        selfies = [selfie] if isinstance(selfie, bytes | bytearray) else list(selfie)
        if not selfies:
            raise InvalidInput("an erasure needs at least one selfie")
        pairs = [self._selfie(actor, action, s) for s in selfies]
        return [sha for sha, _ in pairs], [face for _, face in pairs]

    def erase_preview(
        self,
        actor: Actor,
        selfie: bytes | Sequence[bytes],
        *,
        threshold: float | None = None,
    ) -> list[dict[str, Any]]:
        """The candidates an erasure would consider (logged; nothing changes): every face a
        search of the selfie(s) would return, each marked ``erase`` (within the strict
        threshold: erased by default) or ``review`` (between the strict and the search
        threshold: withheld from search until the DPO decides)."""
        strict = self._threshold(threshold)
        self.guard.authorize(actor, "subject.erase.preview", "dpo")
        shas, faces = self._selfies(actor, "subject.erase.preview", selfie)
        radius = self._review_radius(strict)
        found = self._found(faces, radius)
        matches = self._details([c for _, c in found.values()])
        for m in matches:
            m["distance"] = found[m["face_id"]][0]
            m["proposal"] = "erase" if m["distance"] <= strict else "review"
        self.audit.record(
            actor,
            "subject.erase.preview",
            probe_hash=shas[0],
            threshold=strict,
            model_id=self.models.model_id,
            details={"face_ids": [m["face_id"] for m in matches], "review_threshold": radius},
        )
        return matches

    def erase(
        self,
        actor: Actor,
        selfie: bytes | Sequence[bytes],
        *,
        reference: str | None = None,
        threshold: float | None = None,
        face_ids: list[int] | None = None,
    ) -> dict[str, Any]:
        """Delete the person's faces (templates, crops, index entries; media records left
        empty), put the selfie(s) and the erased faces on the suppression list and return a
        receipt.

        Candidates are every face a search of the selfie(s) would return. Without
        ``face_ids`` the ones within the strict threshold are erased; ``face_ids`` erases
        exactly these reviewed candidates. Candidates not erased are listed in the receipt
        under ``review``: search withholds them until the DPO erases or releases them
        (``review``).
        """

        strict = self._threshold(threshold)
        radius = self._review_radius(strict)
        check_text(reference, "reference", REFERENCE_CHARS)
        for face_id in face_ids or []:
            check_id(face_id, "face id")
        self.guard.authorize(actor, "subject.erase", "dpo", details={"reference": reference})
        received = utcnow()
        shas, faces = self._selfies(actor, "subject.erase", selfie)
        sha = shas[0]
        with transaction(self.writes) as session:
            # Under the erasure lock no ingest write is in flight: the candidates are
            # complete, and every later ingest sees this suppression entry.
            erasure_lock(session)
            found = self._found(faces, radius)
            strict_ids = [f for f, (d, _) in found.items() if d <= strict]
            chosen = strict_ids if face_ids is None else sorted(set(face_ids))
            stray = sorted(set(chosen) - set(found))
            if stray:
                raise InvalidInput(
                    f"faces {stray} are not candidates of this selfie at threshold {radius}"
                )
            chosen_set = set(chosen)
            review_ids = [f for f in found if f not in chosen_set]
            review = [
                {
                    "face_id": f,
                    "distance": found[f][0],
                    "media_path": found[f][1].media_path,
                    "source": found[f][1].source,
                }
                for f in review_ids
            ]
            request = SubjectRequest(
                kind="erasure",
                reference=reference,
                selfie_sha256=sha,
                threshold=strict,
                handled_by=actor.name,
                received_at=received,
            )
            session.add(request)
            session.flush()
            # The person's templates: the selfie(s) and every face erased as theirs.
            person = np.concatenate(
                [np.stack([f.descriptor for f in faces]), self._templates(session, chosen)]
            ).astype("<f4")
            cipher = self.keys.writing(session)
            request.suppression_template = cipher.encrypt(
                person.tobytes(), suppression_aad(request.id)
            )
            request.key_id = cipher.key_id
            counts = self.gallery.delete_faces(session, chosen)
            beyond = [f for f in chosen if found[f][0] > strict]
            event = self.audit.append(
                session,
                actor,
                "subject.erase",
                probe_hash=sha,
                threshold=strict,
                model_id=self.models.model_id,
                details=counts
                | {
                    "request_id": request.id,
                    "reference": reference,
                    "face_ids": chosen,
                    "review_face_ids": review_ids,
                    "review_threshold": radius,
                },
            )
            receipt: dict[str, Any] = {
                "request_id": request.id,
                "action": "subject.erase",
                "reference": reference,
                "selfie_sha256": sha,
                "selfies_sha256": shas,
                "threshold": strict,
                "review_threshold": radius,
                "face_ids": chosen,
                "distances": {str(f): found[f][0] for f in chosen},
                **counts,
                "review": review,
                "collateral": {
                    "erased_beyond_strict_threshold": len(beyond),
                    "withheld_pending_review": len(review),
                    "note": (
                        "Faces are matched by distance, not identity. Faces erased within "
                        f"the strict threshold ({strict}) are very likely the requester's; "
                        f"{len(beyond)} erased face(s) beyond it were chosen by the DPO; "
                        f"{len(review)} face(s) between {strict} and {radius} may be "
                        "other people: they are withheld from search until the DPO erases "
                        "or releases them. Faces ingested later within the search threshold "
                        "of the person's templates are withheld from search too."
                    ),
                },
                "suppressed": True,
                "suppression_templates": len(person),
                "by": actor.name,
                "received_at": received.isoformat(),
                "audit_seq": event.seq,
                "completed_at": utcnow().isoformat(),
            }
            receipt["receipt_sha256"] = hashlib.sha256(canonical(receipt).encode()).hexdigest()
            request.receipt = receipt
            request.completed_at = utcnow()
            request.audit_seq = event.seq
        self.index.drop(chosen)
        # Residue, measured after the commit: what a search of the selfie(s) at the search
        # threshold still returns (search withholds the review candidates).
        residue = sorted(
            {
                c.face_id
                for f in faces
                for c in self.search.match(f, SUBJECT_TOP_K, radius, exact=True).candidates
            }
        )
        receipt.pop("receipt_sha256")
        receipt["residue"] = {"search_threshold": radius, "face_ids": residue}
        receipt["receipt_sha256"] = hashlib.sha256(canonical(receipt).encode()).hexdigest()
        with transaction(self.writes) as session:
            stored = session.get(SubjectRequest, receipt["request_id"])
            if stored is None:
                raise NotFound(f"no erasure request {receipt['request_id']}")
            stored.receipt = receipt
        return receipt

    def review(
        self,
        actor: Actor,
        request_id: int,
        *,
        erase: Sequence[int] = (),
        release: Sequence[int] = (),
    ) -> dict[str, Any]:
        """The DPO's decision on an erasure's review candidates: ``erase`` the ones that are
        the requester (deleted and added to the suppression list), ``release`` the ones that
        are someone else (searchable again). Recorded as a follow-up erasure request with its
        own receipt."""

        self.guard.authorize(
            actor, "subject.erase.review", "dpo", details={"request_id": request_id}
        )
        erase_ids, release_ids = sorted(set(erase)), sorted(set(release))
        if not erase_ids and not release_ids:
            raise InvalidInput("name the review candidates to erase or to release")
        if set(erase_ids) & set(release_ids):
            raise InvalidInput("a face cannot be both erased and released")
        received = utcnow()
        with transaction(self.writes) as session:
            erasure_lock(session)
            parent = session.get(SubjectRequest, request_id)
            if parent is None or parent.kind != "erasure" or not parent.receipt:
                raise NotFound(f"no erasure request {request_id}")
            if parent.receipt.get("parent_request_id") is not None:
                raise InvalidInput(f"request {request_id} is itself a review decision")
            pending = set(self.pending_review(session, request_id))
            wrong = sorted((set(erase_ids) | set(release_ids)) - pending)
            if wrong:
                raise InvalidInput(
                    f"faces {wrong} are not pending review in erasure request {request_id}"
                )
            request = SubjectRequest(
                kind="erasure",
                reference=parent.reference,
                selfie_sha256=parent.selfie_sha256,
                threshold=parent.threshold,
                handled_by=actor.name,
                received_at=received,
            )
            session.add(request)
            session.flush()
            person = self._templates(session, erase_ids).astype("<f4")
            if len(person):
                cipher = self.keys.writing(session)
                request.suppression_template = cipher.encrypt(
                    person.tobytes(), suppression_aad(request.id)
                )
                request.key_id = cipher.key_id
            counts = self.gallery.delete_faces(session, erase_ids)
            still = sorted(pending - set(erase_ids) - set(release_ids))
            event = self.audit.append(
                session,
                actor,
                "subject.erase.review",
                probe_hash=parent.selfie_sha256,
                threshold=parent.threshold,
                model_id=self.models.model_id,
                details=counts
                | {
                    "request_id": request.id,
                    "parent_request_id": request_id,
                    "face_ids": erase_ids,
                    "released": release_ids,
                },
            )
            receipt: dict[str, Any] = {
                "request_id": request.id,
                "parent_request_id": request_id,
                "action": "subject.erase.review",
                "reference": parent.reference,
                "face_ids": erase_ids,
                "released": release_ids,
                "still_pending": still,
                **counts,
                "by": actor.name,
                "received_at": received.isoformat(),
                "completed_at": utcnow().isoformat(),
                "audit_seq": event.seq,
            }
            receipt["receipt_sha256"] = hashlib.sha256(canonical(receipt).encode()).hexdigest()
            request.receipt = receipt
            request.completed_at = utcnow()
            request.audit_seq = event.seq
        self.index.drop(erase_ids)
        return receipt

    def pending_review(self, session, request_id: int) -> list[int]:
        """Review candidates of erasure ``request_id`` the DPO has not decided yet."""
        rows = session.scalars(
            select(SubjectRequest.receipt).where(SubjectRequest.kind == "erasure")
        ).all()
        parent = next((r for r in rows if r and r.get("request_id") == request_id), None)
        if parent is None:
            return []
        decided: set[int] = set()
        for r in rows:
            if r and r.get("parent_request_id") == request_id:
                decided |= set(r.get("face_ids", [])) | set(r.get("released", []))
        return [f["face_id"] for f in parent.get("review", []) if f["face_id"] not in decided]

    # -- records -------------------------------------------------------------------------
    def requests(self, actor: Actor) -> list[dict[str, Any]]:
        """Rights requests with their dates and time to completion (dpo, auditor)."""
        self.guard.authorize(actor, "subject.list", "dpo", "auditor", "admin")
        return self.request_records()

    def receipts(
        self,
        actor: Actor,
        *,
        limit: int = RECEIPTS_PAGE,
        before_seq: int | None = None,
        kind: str | None = None,
        reference: str | None = None,
    ) -> dict[str, Any]:
        """One page of the receipts the rights services and the physical purge produced,
        newest first (dpo, auditor): ``{"receipts": [...], "next": before_seq | None}``.

        Access and erasure receipts as stored with their request (an erasure review decision
        is an erasure receipt naming its ``parent_request_id``); restrictions and lifts, and
        the physical purges (``index purge``: what they cover, linked to the erasures),
        recorded in the audit log only, with their audit record's hash. Each entry carries
        the counts a DPO checks (faces erased, collateral, residue) beside the full receipt.

        Every receipt is one audit record, written in the transaction that made it, so the
        list is ordered by that record's sequence number (its time order, unique) and paged
        by it like the audit log: ``next`` is the ``before_seq`` of the next page (None on
        the last); receipts written between two page fetches are newer than the cursor and
        do not shift the pages. ``kind`` is one of ``RECEIPT_KINDS``; ``reference`` matches
        a part of the request reference or subject, ignoring case."""
        self.guard.authorize(actor, "subject.receipts", "dpo", "auditor")
        if not 1 <= limit <= RECEIPTS_PAGE_MAX:
            raise InvalidInput(f"limit must be 1 to {RECEIPTS_PAGE_MAX}, not {limit}")
        if before_seq is not None:
            check_id(before_seq, "before_seq")
        if kind is not None and kind not in RECEIPT_KINDS:
            raise InvalidInput(f"kind must be one of {', '.join(RECEIPT_KINDS)}, not {kind!r}")
        needle = (check_text(reference, "reference", REFERENCE_CHARS) or "").strip().lower()
        q = (
            select(AuditEvent, SubjectRequest)
            .outerjoin(SubjectRequest, SubjectRequest.audit_seq == AuditEvent.seq)
            # Receipts are a few records among (perhaps millions of) searches: read them
            # through the index on (action, seq), not by a scan of the log.
            .where(AuditEvent.action.in_(RECEIPT_ACTIONS), AuditEvent.outcome == "ok")
            .order_by(AuditEvent.seq.desc())
        )
        if kind in REQUEST_ACTIONS:
            q = q.where(SubjectRequest.id.is_not(None), AuditEvent.action == REQUEST_ACTIONS[kind])
        elif kind is not None:
            q = q.where(AuditEvent.action == LOGGED_ACTIONS[kind])
        else:
            q = q.where(
                SubjectRequest.id.is_not(None) | AuditEvent.action.in_(LOGGED_ACTIONS.values())
            )
        if before_seq is not None:
            q = q.where(AuditEvent.seq < before_seq)
        out: list[dict[str, Any]] = []
        more = False
        with self.sessions() as session:
            for ev, r in session.execute(q.execution_options(yield_per=200)):
                entry = request_receipt(r, ev) if r is not None else logged_receipt(ev)
                if needle and needle not in (
                    f"{entry['reference'] or ''}\n{entry['subject'] or ''}".lower()
                ):
                    continue
                if len(out) == limit:
                    more = True
                    break
                out.append(entry)
            self._link_purges(session, out)
        return {"receipts": out, "next": out[-1]["audit_seq"] if more else None}

    def _link_purges(self, session: Session, entries: list[dict[str, Any]]) -> None:
        """Name the erasure requests each purge on the page covered (its ``covers_audit_seqs``
        are the audit records of the deletions whose bytes it removed)."""
        purges = [e for e in entries if e["kind"] == "purge"]
        covered = {s for e in purges for s in e["receipt"]["covers_audit_seqs"]}
        if not covered:
            return
        requests = dict(
            session.execute(
                select(SubjectRequest.audit_seq, SubjectRequest.id).where(
                    SubjectRequest.audit_seq.in_(covered)
                )
            ).all()
        )
        for e in purges:
            ids = sorted(requests[s] for s in e["receipt"]["covers_audit_seqs"] if s in requests)
            e["receipt"]["covers_request_ids"] = ids
            e["counts"]["erasure_requests"] = len(ids)

    def request_records(self) -> list[dict[str, Any]]:

        with self.sessions() as session:
            rows = session.scalars(select(SubjectRequest).order_by(SubjectRequest.id))
            out = []
            for r in rows:
                received = as_utc(r.received_at)
                completed = as_utc(r.completed_at) if r.completed_at else None
                out.append(
                    {
                        "id": r.id,
                        "kind": r.kind,
                        "reference": r.reference,
                        "handled_by": r.handled_by,
                        "received_at": received.isoformat(),
                        "completed_at": completed.isoformat() if completed else None,
                        "seconds_to_complete": (
                            round((completed - received).total_seconds(), 3) if completed else None
                        ),
                        "faces": len((r.receipt or {}).get("face_ids", [])),
                        "suppression": r.suppression_template is not None,
                        "audit_seq": r.audit_seq,
                        "pending_review": (
                            self.pending_review(session, r.id) if r.kind == "erasure" else []
                        ),
                    }
                    | (
                        self.index.erasure_status(r.audit_seq)
                        if r.kind == "erasure" and r.audit_seq
                        else {}
                    )
                )
            return out


def receipt_kind(kind: str, receipt: dict[str, Any]) -> str:
    """access, erasure, or erasure-review (the DPO's decision on an erasure's candidates)."""
    if kind == "erasure" and receipt.get("parent_request_id") is not None:
        return "erasure-review"
    return kind


def request_receipt(r: SubjectRequest, ev: AuditEvent) -> dict[str, Any]:
    """A rights request's entry in the receipts list: its stored receipt and counts."""
    receipt = dict(r.receipt or {})
    completed = as_utc(r.completed_at) if r.completed_at else None
    return {
        "id": f"request-{r.id}",
        "request_id": r.id,
        "kind": receipt_kind(r.kind, receipt),
        "reference": r.reference,
        "subject": receipt.get("subject"),
        "at": (completed or as_utc(r.received_at)).isoformat(),
        "by": r.handled_by,
        "audit_seq": ev.seq,
        "audit_hash": ev.hash,
        "counts": receipt_counts(r.kind, receipt),
        "receipt_sha256": receipt.get("receipt_sha256"),
        # The stored receipt, with the request's own fields where it lacks them (an access
        # receipt is a summary).
        "receipt": {"request_id": r.id, "kind": r.kind, "by": r.handled_by} | receipt,
    }


def logged_receipt(ev: AuditEvent) -> dict[str, Any]:
    """A restriction, its lifting or a physical purge: the audit record is the receipt."""
    details: dict[str, Any] = json.loads(ev.details) or {}
    kind = next(k for k, action in LOGGED_ACTIONS.items() if action == ev.action)
    stamp = {"by": ev.actor, "at": ev.ts, "audit_seq": ev.seq, "audit_hash": ev.hash}
    if kind == "purge":
        covers = [int(s) for s in details.get("covers_audit_seqs") or []]
        # The erasure requests among the deletions covered: filled in by ``_link_purges``.
        counts = {"deletions_covered": len(covers), "erasure_requests": 0}
        receipt: dict[str, Any] = (
            {"action": ev.action}
            | details
            | {"covers_audit_seqs": covers, "covers_request_ids": []}
            | stamp
        )
        subject = None
    else:
        media = details.get("media") or []
        counts = {"media": len(media)}
        subject = details.get("subject")
        receipt = {
            "action": ev.action,
            "subject": subject,
            "source": details.get("source"),
            "media": media,
            "restricted": kind == "restriction",
        } | stamp
    return {
        "id": f"audit-{ev.seq}",
        "request_id": None,
        "kind": kind,
        "reference": subject,
        "subject": subject,
        "at": ev.ts,
        "by": ev.actor,
        "audit_seq": ev.seq,
        "audit_hash": ev.hash,
        "counts": counts,
        "receipt_sha256": None,
        "receipt": receipt,
    }


def receipt_counts(kind: str, receipt: dict[str, Any]) -> dict[str, int]:
    """The numbers a DPO checks on a receipt: faces found (access); for an erasure, faces
    erased, the collateral the receipt reports (faces erased beyond the strict threshold,
    faces withheld from search for review: either may be someone else) and the residue
    (faces a search of the selfie still returned afterwards); for a review decision, faces
    released and still pending. A key is absent when the receipt does not report it (an
    erasure by subject reference has no distance, hence no collateral or residue)."""
    if kind == "access":
        return {
            "matches": int(receipt.get("matches", 0)),
            "searches": int(receipt.get("searches", 0)),
        }
    counts = {"faces_erased": int(receipt.get("faces", 0))}
    if receipt.get("parent_request_id") is not None:
        return counts | {
            "released": len(receipt.get("released", [])),
            "still_pending": len(receipt.get("still_pending", [])),
        }
    collateral = receipt.get("collateral")
    if collateral is not None:
        counts["collateral_beyond_strict"] = int(
            collateral.get("erased_beyond_strict_threshold", 0)
        )
        counts["collateral_withheld"] = int(collateral.get("withheld_pending_review", 0))
    residue = receipt.get("residue")
    if residue is not None:
        counts["residue"] = len(residue.get("face_ids", []))
    return counts
