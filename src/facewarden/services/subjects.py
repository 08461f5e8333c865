"""Data subjects' rights: access (a report of everything held about a face) and erasure
(delete it, remember it on an encrypted suppression list, hand back a receipt).

The selfie is used once and never stored: only its hash is kept with the request record,
and, for an erasure, its template (encrypted) as the suppression entry.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select

from facewarden.adapters.storage.db import erasure_lock, transaction
from facewarden.adapters.storage.tables import (
    Case,
    CaseSearch,
    Media,
    SearchHit,
    Source,
    SubjectRequest,
)
from facewarden.core.actors import Actor
from facewarden.core.clock import as_utc, utcnow
from facewarden.core.errors import FacewardenError, InvalidInput, NoFaceFound
from facewarden.core.limits import REFERENCE_CHARS, check_id, check_text
from facewarden.core.schemas import Candidate, FaceTemplate
from facewarden.services.audit import canonical

if TYPE_CHECKING:
    from facewarden.services.app import Facewarden

SUBJECT_TOP_K = 1000


def suppression_aad(request_id: int) -> bytes:
    return f"suppress:{request_id}".encode()


class SubjectService:
    def __init__(self, app: Facewarden) -> None:
        self.app = app

    # -- matching ------------------------------------------------------------------------
    def _selfie(self, actor: Actor, action: str, selfie: bytes) -> tuple[str, FaceTemplate]:
        """The one face of the selfie; several faces or none is a clear error (logged)."""
        sha = hashlib.sha256(selfie).hexdigest()
        try:
            faces = self.app.analyse_probe(selfie).faces
            if not faces:
                raise NoFaceFound("no face found in the selfie")
            if len(faces) > 1:
                raise InvalidInput(
                    f"the selfie shows {len(faces)} faces: it must show only the requester"
                )
        except FacewardenError as exc:
            self.app.audit.record(actor, action, outcome="error", probe_hash=sha, error=exc.message)
            raise
        return sha, faces[0]

    def _candidates(self, face: FaceTemplate, threshold: float) -> list[Candidate]:
        """Every face of the person the database holds: the index is first reconciled with
        the database (faces other processes, or an ingest thread, committed and not yet
        indexed here), then searched exactly, not approximately."""
        self.app.sync_index()
        return self.app.search.match(
            face, SUBJECT_TOP_K, threshold, searchable_only=False, exact=True
        ).candidates

    def _threshold(self, threshold: float | None) -> float:
        threshold = self.app.settings.subject_threshold if threshold is None else threshold
        if not 0 < threshold <= 1.0:
            raise InvalidInput("the subject threshold must be in (0, 1]")
        return threshold

    def _details(self, candidates: list[Candidate]) -> list[dict[str, Any]]:
        """Each candidate with its provenance, retention and the searches that returned it."""

        rows = []
        with self.app.sessions() as session:
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

        app = self.app
        threshold = self._threshold(threshold)
        check_text(reference, "reference", REFERENCE_CHARS)
        app.authorize(actor, "subject.access", "dpo", details={"reference": reference})
        received = utcnow()
        sha, face = self._selfie(actor, "subject.access", selfie)
        matches = self._details(self._candidates(face, threshold))
        report: dict[str, Any] = {
            "kind": "access",
            "reference": reference,
            "selfie_sha256": sha,
            "threshold": threshold,
            "model": app.model_id,
            "received_at": received.isoformat(),
            "handled_by": actor.name,
            "review_note": (
                "Candidates found by face comparison at a strict threshold. A person must "
                "check each one before the report is sent: a wrong candidate is someone "
                "else's data."
            ),
            "matches": matches,
        }
        with transaction(app.writes) as session:
            completed = utcnow()
            report["completed_at"] = completed.isoformat()
            summary = {
                "matches": len(matches),
                "face_ids": [m["face_id"] for m in matches],
                "searches": sum(len(m["searches"]) for m in matches),
            }
            request = SubjectRequest(
                kind="access",
                reference=reference,
                selfie_sha256=sha,
                threshold=threshold,
                handled_by=actor.name,
                received_at=received,
                completed_at=completed,
                receipt=summary,
            )
            session.add(request)
            session.flush()
            event = app.audit.append(
                session,
                actor,
                "subject.access",
                probe_hash=sha,
                threshold=threshold,
                model_id=app.model_id,
                details=summary | {"request_id": request.id, "reference": reference},
            )
            request.audit_seq = event.seq
            report["request_id"] = request.id
            report["audit_seq"] = event.seq
        return report

    # -- erasure -------------------------------------------------------------------------
    def erase_preview(
        self, actor: Actor, selfie: bytes, *, threshold: float | None = None
    ) -> list[dict[str, Any]]:
        """The candidates an erasure would delete (logged; nothing changes)."""
        threshold = self._threshold(threshold)
        self.app.authorize(actor, "subject.erase.preview", "dpo")
        sha, face = self._selfie(actor, "subject.erase.preview", selfie)
        matches = self._details(self._candidates(face, threshold))
        self.app.audit.record(
            actor,
            "subject.erase.preview",
            probe_hash=sha,
            threshold=threshold,
            model_id=self.app.model_id,
            details={"face_ids": [m["face_id"] for m in matches]},
        )
        return matches

    def erase(
        self,
        actor: Actor,
        selfie: bytes,
        *,
        reference: str | None = None,
        threshold: float | None = None,
        face_ids: list[int] | None = None,
    ) -> dict[str, Any]:
        """Delete the person's faces (templates, crops, index entries; media records left
        empty), put them on the suppression list and return a receipt.

        ``face_ids`` limits the erasure to reviewed candidates (all candidates otherwise).
        """

        app = self.app
        threshold = self._threshold(threshold)
        check_text(reference, "reference", REFERENCE_CHARS)
        for face_id in face_ids or []:
            check_id(face_id, "face id")
        app.authorize(actor, "subject.erase", "dpo", details={"reference": reference})
        received = utcnow()
        sha, face = self._selfie(actor, "subject.erase", selfie)
        with transaction(app.writes) as session:
            # Under the erasure lock no ingest write is in flight: the candidates are
            # complete, and every later ingest sees this suppression entry.
            erasure_lock(session)
            found = [c.face_id for c in self._candidates(face, threshold)]
            chosen = found if face_ids is None else sorted(set(face_ids))
            stray = sorted(set(chosen) - set(found))
            if stray:
                raise InvalidInput(
                    f"faces {stray} are not candidates of this selfie at threshold {threshold}"
                )
            request = SubjectRequest(
                kind="erasure",
                reference=reference,
                selfie_sha256=sha,
                threshold=threshold,
                handled_by=actor.name,
                received_at=received,
            )
            session.add(request)
            session.flush()
            cipher = app.keys.writing(session)
            request.suppression_template = cipher.encrypt_template(
                face.descriptor, suppression_aad(request.id)
            )
            request.key_id = cipher.key_id
            counts = app.gallery.delete_faces(session, chosen)
            event = app.audit.append(
                session,
                actor,
                "subject.erase",
                probe_hash=sha,
                threshold=threshold,
                model_id=app.model_id,
                details=counts
                | {"request_id": request.id, "reference": reference, "face_ids": chosen},
            )
            receipt: dict[str, Any] = {
                "request_id": request.id,
                "action": "subject.erase",
                "reference": reference,
                "selfie_sha256": sha,
                "threshold": threshold,
                "face_ids": chosen,
                **counts,
                "suppressed": True,
                "by": actor.name,
                "received_at": received.isoformat(),
                "completed_at": utcnow().isoformat(),
                "audit_seq": event.seq,
            }
            receipt["receipt_sha256"] = hashlib.sha256(canonical(receipt).encode()).hexdigest()
            request.receipt = receipt
            request.completed_at = utcnow()
            request.audit_seq = event.seq
        app.gallery.drop_from_index(chosen)
        return receipt

    # -- records -------------------------------------------------------------------------
    def requests(self, actor: Actor) -> list[dict[str, Any]]:
        """Rights requests with their dates and time to completion (dpo, auditor)."""
        self.app.authorize(actor, "subject.list", "dpo", "auditor", "admin")
        return self.request_records()

    def request_records(self) -> list[dict[str, Any]]:

        with self.app.sessions() as session:
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
                    }
                    | (
                        self.app.gallery.erasure_status(r.audit_seq)
                        if r.kind == "erasure" and r.audit_seq
                        else {}
                    )
                )
            return out

    def suppression_list(self) -> np.ndarray:
        """The erased people's templates, decrypted for ingest to compare against."""
        with self.app.sessions() as session:
            rows = session.execute(
                select(
                    SubjectRequest.id, SubjectRequest.suppression_template, SubjectRequest.key_id
                ).where(SubjectRequest.suppression_template.is_not(None))
            ).all()
        if not rows:
            return np.zeros((0, 128), np.float32)
        decrypt = self.app.cipher.decrypt_template
        return np.stack([decrypt(t, suppression_aad(i), k) for i, t, k in rows])


def render_report_html(report: dict[str, Any]) -> str:
    """The access report as a self-contained HTML page (autoescaped)."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("facewarden", "templates"), autoescape=select_autoescape()
    )
    return env.get_template("subject_report.html").render(report=report)
