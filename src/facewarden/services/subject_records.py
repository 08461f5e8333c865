"""Data subjects' rights by subject reference: when an ingest manifest linked faces to a
subject of the source system (``services.manifest``), access, erasure, restriction and
export work on every face of that subject, without a selfie.

The selfie-based rights (``services.subjects``) stay as they are; these act on exactly the
faces the source system says are the subject's."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from facewarden.adapters.storage.db import erasure_lock, transaction
from facewarden.adapters.storage.tables import Face, Media, Source, Subject, SubjectRequest
from facewarden.config import Settings
from facewarden.core.actors import Actor
from facewarden.core.binding import suppression_aad, template_aad
from facewarden.core.clock import utcnow
from facewarden.core.errors import InvalidInput, NotFound
from facewarden.core.schemas import Candidate
from facewarden.services.access import RoleGuard
from facewarden.services.audit import AuditLog, canonical
from facewarden.services.gallery import GalleryService
from facewarden.services.index import IndexService
from facewarden.services.keyring import Keyring
from facewarden.services.keys import KeyService
from facewarden.services.models import Models
from facewarden.services.subjects import SubjectService


class SubjectRecordService:
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
        subjects: SubjectService,
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
        self.subjects = subjects

    def _subject(self, session, reference: str, source: str | None) -> tuple[Subject, str]:
        """The subject ``reference`` (of ``source`` when given) and its source's name."""
        reference = (reference or "").strip()
        if not reference:
            raise InvalidInput("a subject reference is required")
        q = (
            select(Subject, Source.name)
            .join(Source, Source.id == Subject.source_id)
            .where(Subject.reference == reference)
        )
        if source is not None:
            q = q.where(Source.name == source)
        rows = session.execute(q).all()
        if not rows:
            where = f" in source {source!r}" if source else ""
            raise NotFound(f"no subject {reference!r}{where}")
        if len(rows) > 1:
            names = ", ".join(sorted(n for _, n in rows))
            raise InvalidInput(
                f"subject {reference!r} exists in several sources ({names}): name one (--source)"
            )
        return rows[0][0], rows[0][1]

    def _faces(self, session, subject_id: int) -> list[Face]:
        return list(
            session.scalars(select(Face).where(Face.subject_id == subject_id).order_by(Face.id))
        )

    @staticmethod
    def _as_candidates(faces: list[Face]) -> list[Candidate]:
        return [
            Candidate(
                rank=n,
                distance=0.0,
                score=1.0,
                face_id=f.id,
                media_id=f.media_id,
                media_path="",
                source="",
                box=[f.top, f.right, f.bottom, f.left],
                face_index=f.face_index,
            )
            for n, f in enumerate(faces, 1)
        ]

    # -- access and export -----------------------------------------------------------------
    def access(self, actor: Actor, reference: str, *, source: str | None = None) -> dict[str, Any]:
        """Everything held about the subject: its metadata and each linked face with its
        provenance, retention and the searches that returned it (logged)."""
        self.guard.authorize(actor, "subject.access", "dpo", details={"subject": reference})
        received = utcnow()
        with self.sessions() as session:
            subject, source_name = self._subject(session, reference, source)
            subject_id, fields = subject.id, dict(subject.fields)
            restricted = subject.restricted
            faces = self._faces(session, subject_id)
        matches = self.subjects._details(self._as_candidates(faces))
        for m in matches:
            m.pop("distance", None)
        report: dict[str, Any] = {
            "kind": "access",
            "subject": reference,
            "source": source_name,
            "fields": fields,
            "restricted": restricted,
            "reference": reference,
            "model": self.models.model_id,
            "received_at": received.isoformat(),
            "handled_by": actor.name,
            "review_note": (
                "Faces linked to this subject by the source system's manifest. Other photos "
                "of the person not linked to it are found by a selfie-based request."
            ),
            "matches": matches,
        }
        return self.subjects.record_access(
            actor,
            report,
            received=received,
            requester=f"subject:{subject_id}",
            threshold=0.0,
            summary={"subject": reference, "source": source_name},
        )

    # -- erasure ---------------------------------------------------------------------------
    def erase(self, actor: Actor, reference: str, *, source: str | None = None) -> dict[str, Any]:
        """Delete every face linked to the subject (templates, crops, index entries; media
        left without faces), the subject record and its metadata; put the centroid of its
        templates on the suppression list; return a receipt."""
        self.guard.authorize(actor, "subject.erase", "dpo", details={"subject": reference})
        received = utcnow()
        with transaction(self.writes) as session:
            erasure_lock(session)
            subject, source_name = self._subject(session, reference, source)
            faces = self._faces(session, subject.id)
            face_ids = [f.id for f in faces]
            request = SubjectRequest(
                kind="erasure",
                reference=reference,
                selfie_sha256=f"subject:{subject.id}",
                threshold=self.settings.subject_threshold,
                handled_by=actor.name,
                received_at=received,
            )
            session.add(request)
            session.flush()
            if faces:
                shas = dict(
                    session.execute(
                        select(Media.id, Media.sha256).where(
                            Media.id.in_({f.media_id for f in faces})
                        )
                    ).all()
                )
                vecs = np.stack(
                    [
                        self.keyring.cipher.decrypt_template(
                            f.template, template_aad(shas[f.media_id], f.face_index), f.key_id
                        )
                        for f in faces
                    ]
                )
                cipher = self.keys.writing(session)
                request.suppression_template = cipher.encrypt_template(
                    vecs.mean(axis=0).astype(np.float32), suppression_aad(request.id)
                )
                request.key_id = cipher.key_id
            counts = self.gallery.delete_faces(session, face_ids) if face_ids else {"faces": 0}
            session.delete(subject)
            event = self.audit.append(
                session,
                actor,
                "subject.erase",
                model_id=self.models.model_id,
                details=counts
                | {
                    "request_id": request.id,
                    "subject": reference,
                    "source": source_name,
                    "face_ids": face_ids,
                },
            )
            receipt: dict[str, Any] = {
                "request_id": request.id,
                "action": "subject.erase",
                "subject": reference,
                "source": source_name,
                "reference": reference,
                "face_ids": face_ids,
                **counts,
                "subject_record_deleted": True,
                "suppressed": bool(faces),
                "by": actor.name,
                "received_at": received.isoformat(),
                "completed_at": utcnow().isoformat(),
                "audit_seq": event.seq,
            }
            receipt["receipt_sha256"] = hashlib.sha256(canonical(receipt).encode()).hexdigest()
            request.receipt = receipt
            request.completed_at = utcnow()
            request.audit_seq = event.seq
        self.index.drop(face_ids)
        return receipt

    # -- restriction -----------------------------------------------------------------------
    def restrict(
        self,
        actor: Actor,
        reference: str,
        *,
        source: str | None = None,
        restricted: bool = True,
    ) -> dict[str, Any]:
        """Exclude every media with a face of the subject from search (or lift that)."""
        action = "subject.restrict" if restricted else "subject.unrestrict"
        self.guard.authorize(actor, action, "dpo", details={"subject": reference})
        with transaction(self.writes) as session:
            subject, source_name = self._subject(session, reference, source)
            media_ids = sorted({f.media_id for f in self._faces(session, subject.id)})
            if media_ids:
                session.execute(
                    update(Media).where(Media.id.in_(media_ids)).values(restricted=restricted)
                )
            subject.restricted = restricted
            self.audit.append(
                session,
                actor,
                action,
                details={"subject": reference, "source": source_name, "media": media_ids},
            )
        return {
            "subject": reference,
            "source": source_name,
            "media": media_ids,
            "restricted": restricted,
        }
