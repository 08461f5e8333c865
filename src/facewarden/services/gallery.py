"""Deleting media (by id, source, jurisdiction or expiry), restriction, and index rebuilds."""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import delete, func, or_, select, update

from facewarden.adapters.storage.db import (
    erasure_lock,
    purge_deleted_rows,
    rowcount,
    transaction,
)
from facewarden.adapters.storage.tables import (
    AuditEvent,
    Case,
    CaseSearch,
    Face,
    FaceCrop,
    Media,
    ProbeFace,
    SearchHit,
    Source,
)
from facewarden.core.actors import MEMBER_ROLES, OVERSIGHT, Actor
from facewarden.core.binding import crop_aad
from facewarden.core.clock import utcnow
from facewarden.core.errors import InvalidInput, NotFound, Refused
from facewarden.core.limits import check_id
from facewarden.services.audit import canonical

if TYPE_CHECKING:
    from facewarden.services.app import Facewarden

# Audit actions that delete templates (their details list the deleted ``face_ids``).
ERASING_ACTIONS = ("delete", "purge", "retention.run", "subject.erase")
# The audit records of completed physical purges.
PURGE_DONE = (AuditEvent.action == "index.purge", AuditEvent.outcome == "ok")


def wipe_probe_templates(session, case_ids, now) -> int:
    """Drop the kept probe templates of the given cases (their hashes stay)."""
    return session.execute(
        update(CaseSearch)
        .where(CaseSearch.case_id.in_(case_ids), CaseSearch.probe_templates.is_not(None))
        .values(probe_templates=None, templates_wiped_at=now)
    ).rowcount


def wipe_probe_faces(session, case_ids) -> int:
    """Delete the kept probe face crops of the given cases' searches."""
    searches = select(CaseSearch.id).where(CaseSearch.case_id.in_(case_ids))
    return session.execute(delete(ProbeFace).where(ProbeFace.search_id.in_(searches))).rowcount


class GalleryService:
    def __init__(self, app: Facewarden) -> None:
        self.app = app

    def crop(self, actor: Actor, face_id: int, *, search_id: int | None = None) -> bytes:
        """The stored face crop (JPEG). With ``search_id``: a candidate of that search, for
        the people assigned to its case while it is open, and for the DPO and auditors;
        without: any held face, for the DPO (subject access and erasure previews). A face
        of restricted media is shown to the DPO only. Every crop shown is logged."""

        app = self.app
        target = {"face_id": face_id, "search_id": search_id}
        info = None
        if search_id is None:
            app.authorize(actor, "crop.view", "dpo", details=target)
            via = "dpo"
        else:
            app.authorize(actor, "crop.view", *MEMBER_ROLES, *OVERSIGHT, details=target)
            with app.sessions() as session:
                ref = session.scalar(
                    select(Case.ref)
                    .join(CaseSearch, CaseSearch.case_id == Case.id)
                    .where(CaseSearch.id == search_id)
                )
            if ref is None:
                raise NotFound(f"no search {search_id}")
            info, via = app.cases.read_access(actor, ref, "crop.view", record=False, details=target)
        with app.sessions() as session:
            if search_id is not None:
                hit = session.scalar(
                    select(SearchHit.id).where(
                        SearchHit.search_id == search_id, SearchHit.face_id == face_id
                    )
                )
                if hit is None:
                    raise NotFound(f"face {face_id} is not a candidate of search {search_id}")
            row = session.execute(
                select(
                    FaceCrop.data, FaceCrop.key_id, Media.sha256, Face.face_index, Media.restricted
                )
                .join(Face, Face.id == FaceCrop.face_id)
                .join(Media, Media.id == Face.media_id)
                .where(FaceCrop.face_id == face_id)
            ).first()
        if row is None:
            raise NotFound(f"no crop held for face {face_id} (erased, or crops not stored)")
        case_fields = (
            {"case_ref": info.ref, "legal_basis": info.legal_basis, "purpose": info.purpose}
            if info
            else {}
        )
        if row.restricted and not actor.has("dpo"):
            problem = f"crop.view refused: face {face_id} belongs to restricted media (DPO only)"
            app.audit.record(
                actor, "crop.view", outcome="refused", error=problem, details=target, **case_fields
            )
            raise Refused(problem, code="restricted")
        data = app.cipher.decrypt(row.data, crop_aad(row.sha256, row.face_index), row.key_id)
        app.audit.record(actor, "crop.view", details=target | {"access": via}, **case_fields)
        return data

    def delete_media(self, actor: Actor, media_ids: list[int]) -> dict[str, int]:
        if not media_ids:
            raise InvalidInput("no media id given")
        for media_id in media_ids:
            check_id(media_id, "media id")
        self.app.authorize(actor, "delete", "operator", "dpo", details={"media": media_ids})
        with transaction(self.app.writes) as session:
            erasure_lock(session)
            found = set(session.scalars(select(Media.id).where(Media.id.in_(media_ids))))
            missing = sorted(set(media_ids) - found)
            if missing:
                raise NotFound(f"no media with id {', '.join(map(str, missing))}")
            counts, face_ids, _ = self._delete(
                session, actor, sorted(found), {"media": sorted(found)}
            )
        self.drop_from_index(face_ids)
        return counts

    def delete_source(self, actor: Actor, name: str) -> dict[str, int]:
        self.app.authorize(actor, "delete", "operator", "dpo", details={"source": name})
        with transaction(self.app.writes) as session:
            erasure_lock(session)
            src = self.app.sources.get(session, name)
            ids = list(session.scalars(select(Media.id).where(Media.source_id == src.id)))
            counts, face_ids, _ = self._delete(session, actor, ids, {"source": name})
            session.execute(delete(Source).where(Source.id == src.id))
        self.drop_from_index(face_ids)
        return counts

    def retention_run(self, actor: Actor) -> dict[str, object]:
        """Delete every media whose retention has expired (database, index, crops)."""

        self.app.authorize(actor, "retention.run", "dpo", "admin")
        now = utcnow()
        with transaction(self.app.writes) as session:
            erasure_lock(session)
            ended = select(Case.id).where(or_(Case.status != "open", Case.expires_at <= now))
            wiped = wipe_probe_templates(session, ended, now)
            probe_faces = wipe_probe_faces(session, ended)
            ids = list(session.scalars(select(Media.id).where(Media.expires_at <= now)))
            receipt, face_ids = self._receipt(
                session,
                actor,
                "retention.run",
                ids,
                {
                    "expired_before": now.isoformat(),
                    "probe_templates_wiped": wiped,
                    "probe_faces_wiped": probe_faces,
                },
            )
        self.drop_from_index(face_ids)
        return receipt

    def purge(
        self, actor: Actor, *, jurisdiction: str | None = None, source: str | None = None
    ) -> dict[str, object]:
        """Delete all media of one jurisdiction or one source, with a receipt."""
        if bool(jurisdiction) == bool(source):
            raise InvalidInput("purge needs exactly one of --jurisdiction or --source")
        if jurisdiction and not re.fullmatch(r"[A-Za-z]{2}", jurisdiction):
            raise InvalidInput(f"jurisdiction {jurisdiction[:20]!r} must be a two-letter code")
        scope = {"jurisdiction": jurisdiction.upper()} if jurisdiction else {"source": source}
        self.app.authorize(actor, "purge", "dpo", details=scope)
        with transaction(self.app.writes) as session:
            erasure_lock(session)
            q = select(Media.id).join(Source, Source.id == Media.source_id)
            if jurisdiction:
                q = q.where(Source.jurisdiction == jurisdiction.upper())
            else:
                q = q.where(Source.id == self.app.sources.get(session, source or "").id)
            ids = list(session.scalars(q))
            receipt, face_ids = self._receipt(session, actor, "purge", ids, scope)
        self.drop_from_index(face_ids)
        return receipt

    def restrict(self, actor: Actor, media_id: int, restricted: bool = True) -> None:
        """Keep the record but exclude it from every search (or lift the restriction)."""
        check_id(media_id, "media id")
        action = "media.restrict" if restricted else "media.unrestrict"
        self.app.authorize(actor, action, "dpo", details={"media": media_id})
        with transaction(self.app.writes) as session:
            done = rowcount(
                session, update(Media).where(Media.id == media_id).values(restricted=restricted)
            )
            if not done:
                raise NotFound(f"no media with id {media_id}")
            self.app.audit.append(session, actor, action, details={"media": media_id})

    def _receipt(
        self, session, actor: Actor, action: str, media_ids: list[int], scope: dict
    ) -> tuple[dict[str, object], list[int]]:
        """Delete and describe it: counts, when, by whom, and a digest of what went."""
        hashes = sorted(session.scalars(select(Media.sha256).where(Media.id.in_(media_ids))))
        digest = hashlib.sha256(canonical(hashes).encode()).hexdigest()
        counts, face_ids, event_seq = self._delete(
            session, actor, media_ids, scope | {"digest": digest}, action=action
        )

        receipt = {
            "action": action,
            "scope": scope,
            **counts,
            "by": actor.name,
            "completed_at": utcnow().isoformat(),
            "media_digest": digest,
            "audit_seq": event_seq,
        }
        return receipt, face_ids

    def _delete(
        self, session, actor: Actor, media_ids: list[int], scope: dict, action: str = "delete"
    ) -> tuple[dict[str, int], list[int], int]:
        """Delete rows in the caller's transaction; the index follows right after commit.

        Returns the counts, the deleted face ids and the sequence number of the audit record.
        """
        face_ids = list(session.scalars(select(Face.id).where(Face.media_id.in_(media_ids))))
        crops = session.execute(delete(FaceCrop).where(FaceCrop.face_id.in_(face_ids))).rowcount
        session.execute(delete(Face).where(Face.id.in_(face_ids)))
        session.execute(delete(Media).where(Media.id.in_(media_ids)))
        counts = {"media": len(media_ids), "faces": len(face_ids), "crops": crops}
        event = self.app.audit.append(
            session, actor, action, details=scope | counts | {"face_ids": face_ids}
        )
        return counts, face_ids, event.seq

    def delete_faces(self, session, face_ids: list[int]) -> dict[str, object]:
        """Delete single faces (templates, crops) in the caller's transaction, and each media
        record left without faces. Call ``drop_from_index`` after the commit."""
        media_ids = sorted(set(session.scalars(select(Face.media_id).where(Face.id.in_(face_ids)))))
        hashes = sorted(session.scalars(select(Media.sha256).where(Media.id.in_(media_ids))))
        crops = session.execute(delete(FaceCrop).where(FaceCrop.face_id.in_(face_ids))).rowcount
        faces = session.execute(delete(Face).where(Face.id.in_(face_ids))).rowcount
        still_used = set(session.scalars(select(Face.media_id).where(Face.media_id.in_(media_ids))))
        empty = [m for m in media_ids if m not in still_used]
        session.execute(delete(Media).where(Media.id.in_(empty)))
        return {
            "faces": faces,
            "crops": crops,
            "media_records_deleted": len(empty),
            "media_touched": len(media_ids),
            "media_digest": hashlib.sha256(canonical(hashes).encode()).hexdigest(),
        }

    def drop_from_index(self, face_ids: list[int]) -> None:
        # Searches re-check every hit against the database, so even if this process dies
        # before the index is updated, a deleted face is never returned; the next sync drops it.
        if face_ids:
            self.app.index.remove(np.array(face_ids, dtype=np.int64))
            self.app.index.save()

    def pending_erasures(self) -> list[int]:
        """Audit sequence numbers of the deletions since the last ``index.purge``: their
        records are gone, their bytes may not be yet."""
        app = self.app
        with app.sessions() as session:
            last = session.scalar(select(func.max(AuditEvent.seq)).where(*PURGE_DONE))
            rows = session.execute(
                select(AuditEvent.seq, AuditEvent.details).where(
                    AuditEvent.seq > (last or 0),
                    AuditEvent.action.in_(ERASING_ACTIONS),
                    AuditEvent.outcome == "ok",
                )
            ).all()
        return [seq for seq, details in rows if json.loads(details).get("face_ids")]

    def purge_index(self, actor: Actor, *, only_if_pending: bool = False) -> dict | None:
        """Physically erase deleted templates: the index backend's removed vectors and the
        database's deleted rows. Logged as ``index.purge`` naming the deletions it covers,
        so every erasure receipt can say when its bytes were gone (``erasure_status``).

        ``only_if_pending``: do nothing (and return None) when no deletion awaits a purge."""
        app = self.app
        app.authorize(actor, "index.purge", "operator", "admin", "dpo")
        covers = self.pending_erasures()
        if only_if_pending and not covers:
            return None
        purged = app.index.purge()
        report = purged.as_dict()
        report["actions"] = [*purged.actions, *purge_deleted_rows(app.engine)]
        report["covers_audit_seqs"] = covers
        event = app.audit.record(actor, "index.purge", details=report)
        return report | {"purged_at": event.ts, "audit_seq": event.seq}

    def erasure_status(self, audit_seq: int) -> dict[str, object]:
        """When the bytes of the deletion logged at ``audit_seq`` were purged (or pending)."""
        with self.app.sessions() as session:
            purge = session.execute(
                select(AuditEvent.seq, AuditEvent.ts)
                .where(*PURGE_DONE, AuditEvent.seq > audit_seq)
                .order_by(AuditEvent.seq)
                .limit(1)
            ).first()
        if purge is None:
            return {"bytes_purged_at": None, "purge_audit_seq": None}
        return {"bytes_purged_at": purge.ts, "purge_audit_seq": purge.seq}

    def migrate_index(self, actor: Actor, backend: str) -> dict[str, object]:
        """Fill ``backend`` from the database's templates (no re-embedding); switch to it by
        setting ``FACEWARDEN_INDEX``."""
        from facewarden.adapters.index.registry import BACKENDS

        app = self.app
        app.authorize(actor, "index.migrate", "admin", details={"to": backend})
        if backend == app.settings.index:
            raise InvalidInput(f"the index is already {backend}")
        if backend not in BACKENDS:
            raise InvalidInput(f"unknown index backend {backend!r}: faiss, pgvector or qdrant")
        target = app.open_index(backend)
        try:
            target.reset()
            with app.sessions() as session:
                ids = list(
                    session.scalars(
                        select(Face.id).where(Face.model_id == app.model_id).order_by(Face.id)
                    )
                )
            for start in range(0, len(ids), 5000):
                target.add(*app.labelled_templates(ids[start : start + 5000]))
            target.save()
            moved = len(target)
        finally:
            target.close()
        app.audit.record(
            actor,
            "index.migrate",
            model_id=app.model_id,
            gallery_size=moved,
            details={"from": app.settings.index, "to": backend, "faces": moved},
        )
        return {"from": app.settings.index, "to": backend, "faces": moved}

    def rebuild_index(self, actor: Actor) -> dict[str, int]:
        self.app.authorize(actor, "index.rebuild", "operator", "admin")
        faces = self.app.rebuild_index()
        self.app.audit.record(
            actor,
            "index.rebuild",
            model_id=self.app.model_id,
            gallery_size=faces,
            details={"faces": faces},
        )
        return {"faces": faces}
