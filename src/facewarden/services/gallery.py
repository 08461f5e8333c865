"""Deleting media (by id, source, jurisdiction or expiry), restriction, and index rebuilds."""

from __future__ import annotations

import hashlib
import re

from sqlalchemy import Engine, delete, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from facewarden.adapters.storage.db import erasure_lock, rowcount, transaction
from facewarden.adapters.storage.tables import (
    Case,
    CaseSearch,
    Face,
    FaceCrop,
    Media,
    SearchHit,
    Source,
)
from facewarden.config import Settings
from facewarden.core.actors import MEMBER_ROLES, OVERSIGHT, Actor
from facewarden.core.binding import crop_aad
from facewarden.core.clock import utcnow
from facewarden.core.errors import InvalidInput, NotFound, Refused
from facewarden.core.limits import check_id
from facewarden.services.access import RoleGuard
from facewarden.services.audit import AuditLog, canonical
from facewarden.services.cases import CaseService, wipe_probe_faces, wipe_probe_templates
from facewarden.services.index import IndexService
from facewarden.services.keyring import Keyring
from facewarden.services.models import Models
from facewarden.services.sources import SourceService


class GalleryService:
    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        sessions: sessionmaker[Session],
        writes: sessionmaker[Session],
        audit: AuditLog,
        guard: RoleGuard,
        keyring: Keyring,
        models: Models,
        index: IndexService,
        sources: SourceService,
        cases: CaseService,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.sessions = sessions
        self.writes = writes
        self.audit = audit
        self.guard = guard
        self.keyring = keyring
        self.models = models
        self.index = index
        self.sources = sources
        self.cases = cases

    def crop(self, actor: Actor, face_id: int, *, search_id: int | None = None) -> bytes:
        """The stored face crop (JPEG). With ``search_id``: a candidate of that search, for
        the people assigned to its case while it is open, and for the DPO and auditors;
        without: any held face, for the DPO (subject access and erasure previews). A face
        of restricted media is shown to the DPO only. Every crop shown is logged."""

        target = {"face_id": face_id, "search_id": search_id}
        info = None
        if search_id is None:
            self.guard.authorize(actor, "crop.view", "dpo", details=target)
            via = "dpo"
        else:
            self.guard.authorize(actor, "crop.view", *MEMBER_ROLES, *OVERSIGHT, details=target)
            with self.sessions() as session:
                ref = session.scalar(
                    select(Case.ref)
                    .join(CaseSearch, CaseSearch.case_id == Case.id)
                    .where(CaseSearch.id == search_id)
                )
            if ref is None:
                raise NotFound(f"no search {search_id}")
            info, via = self.cases.read_access(
                actor, ref, "crop.view", record=False, details=target
            )
        with self.sessions() as session:
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
            self.audit.record(
                actor, "crop.view", outcome="refused", error=problem, details=target, **case_fields
            )
            raise Refused(problem, code="restricted")
        data = self.keyring.cipher.decrypt(
            row.data, crop_aad(row.sha256, row.face_index), row.key_id
        )
        self.audit.record(actor, "crop.view", details=target | {"access": via}, **case_fields)
        return data

    def delete_media(self, actor: Actor, media_ids: list[int]) -> dict[str, int]:
        if not media_ids:
            raise InvalidInput("no media id given")
        for media_id in media_ids:
            check_id(media_id, "media id")
        self.guard.authorize(actor, "delete", "operator", "dpo", details={"media": media_ids})
        with transaction(self.writes) as session:
            erasure_lock(session)
            found = set(session.scalars(select(Media.id).where(Media.id.in_(media_ids))))
            missing = sorted(set(media_ids) - found)
            if missing:
                raise NotFound(f"no media with id {', '.join(map(str, missing))}")
            counts, face_ids, _ = self._delete(
                session, actor, sorted(found), {"media": sorted(found)}
            )
        self.index.drop(face_ids)
        return counts

    def delete_source(self, actor: Actor, name: str) -> dict[str, int]:
        self.guard.authorize(actor, "delete", "operator", "dpo", details={"source": name})
        with transaction(self.writes) as session:
            erasure_lock(session)
            src = self.sources.get(session, name)
            ids = list(session.scalars(select(Media.id).where(Media.source_id == src.id)))
            counts, face_ids, _ = self._delete(session, actor, ids, {"source": name})
            session.execute(delete(Source).where(Source.id == src.id))
        self.index.drop(face_ids)
        return counts

    def retention_run(self, actor: Actor) -> dict[str, object]:
        """Delete every media whose retention has expired (database, index, crops)."""

        self.guard.authorize(actor, "retention.run", "dpo", "admin")
        now = utcnow()
        with transaction(self.writes) as session:
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
        self.index.drop(face_ids)
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
        self.guard.authorize(actor, "purge", "dpo", details=scope)
        with transaction(self.writes) as session:
            erasure_lock(session)
            q = select(Media.id).join(Source, Source.id == Media.source_id)
            if jurisdiction:
                q = q.where(Source.jurisdiction == jurisdiction.upper())
            else:
                q = q.where(Source.id == self.sources.get(session, source or "").id)
            ids = list(session.scalars(q))
            receipt, face_ids = self._receipt(session, actor, "purge", ids, scope)
        self.index.drop(face_ids)
        return receipt

    def restrict(self, actor: Actor, media_id: int, restricted: bool = True) -> None:
        """Keep the record but exclude it from every search (or lift the restriction)."""
        check_id(media_id, "media id")
        action = "media.restrict" if restricted else "media.unrestrict"
        self.guard.authorize(actor, action, "dpo", details={"media": media_id})
        with transaction(self.writes) as session:
            done = rowcount(
                session, update(Media).where(Media.id == media_id).values(restricted=restricted)
            )
            if not done:
                raise NotFound(f"no media with id {media_id}")
            self.audit.append(session, actor, action, details={"media": media_id})

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
        crops = rowcount(session, delete(FaceCrop).where(FaceCrop.face_id.in_(face_ids)))
        session.execute(delete(Face).where(Face.id.in_(face_ids)))
        session.execute(delete(Media).where(Media.id.in_(media_ids)))
        counts = {"media": len(media_ids), "faces": len(face_ids), "crops": crops}
        event = self.audit.append(
            session, actor, action, details=scope | counts | {"face_ids": face_ids}
        )
        return counts, face_ids, event.seq

    def delete_faces(self, session, face_ids: list[int]) -> dict[str, object]:
        """Delete single faces (templates, crops) in the caller's transaction, and each media
        record left without faces. Call ``drop_from_index`` after the commit."""
        media_ids = sorted(set(session.scalars(select(Face.media_id).where(Face.id.in_(face_ids)))))
        hashes = sorted(session.scalars(select(Media.sha256).where(Media.id.in_(media_ids))))
        crops = rowcount(session, delete(FaceCrop).where(FaceCrop.face_id.in_(face_ids)))
        faces = rowcount(session, delete(Face).where(Face.id.in_(face_ids)))
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

    # -- the index commands (the index service keeps the index; these are its public names) --
    def pending_erasures(self) -> list[int]:
        return self.index.pending_erasures()

    def purge_index(self, actor: Actor, *, only_if_pending: bool = False) -> dict | None:
        return self.index.purge(actor, only_if_pending=only_if_pending)

    def migrate_index(self, actor: Actor, backend: str) -> dict[str, object]:
        return self.index.migrate(actor, backend)

    def rebuild_index(self, actor: Actor) -> dict[str, int]:
        return self.index.rebuild(actor)
