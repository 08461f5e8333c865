"""Deleting media and sources, and rebuilding the derived vector index."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import delete, select

from facewarden.adapters.storage.db import transaction
from facewarden.adapters.storage.tables import Face, FaceCrop, Media, Source
from facewarden.core.actors import Actor
from facewarden.core.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from facewarden.services.app import Facewarden


class GalleryService:
    def __init__(self, app: Facewarden) -> None:
        self.app = app

    def delete_media(self, actor: Actor, media_ids: list[int]) -> dict[str, int]:
        if not media_ids:
            raise InvalidInput("no media id given")
        self.app.authorize(actor, "delete", "operator", "dpo", details={"media": media_ids})
        with transaction(self.app.writes) as session:
            found = set(session.scalars(select(Media.id).where(Media.id.in_(media_ids))))
            missing = sorted(set(media_ids) - found)
            if missing:
                raise NotFound(f"no media with id {', '.join(map(str, missing))}")
            counts, face_ids = self._delete(session, actor, sorted(found), {"media": sorted(found)})
        self._drop_from_index(face_ids)
        return counts

    def delete_source(self, actor: Actor, name: str) -> dict[str, int]:
        self.app.authorize(actor, "delete", "operator", "dpo", details={"source": name})
        with transaction(self.app.writes) as session:
            src = self.app.sources.get(session, name)
            ids = list(session.scalars(select(Media.id).where(Media.source_id == src.id)))
            counts, face_ids = self._delete(session, actor, ids, {"source": name})
            session.execute(delete(Source).where(Source.id == src.id))
        self._drop_from_index(face_ids)
        return counts

    def _delete(
        self, session, actor: Actor, media_ids: list[int], scope: dict
    ) -> tuple[dict[str, int], list[int]]:
        """Delete rows in the caller's transaction; the index follows right after commit."""
        face_ids = list(session.scalars(select(Face.id).where(Face.media_id.in_(media_ids))))
        crops = session.execute(delete(FaceCrop).where(FaceCrop.face_id.in_(face_ids))).rowcount
        session.execute(delete(Face).where(Face.id.in_(face_ids)))
        session.execute(delete(Media).where(Media.id.in_(media_ids)))
        counts = {"media": len(media_ids), "faces": len(face_ids), "crops": crops}
        self.app.audit.append(
            session, actor, "delete", details=scope | counts | {"face_ids": face_ids}
        )
        return counts, face_ids

    def _drop_from_index(self, face_ids: list[int]) -> None:
        # Searches re-check every hit against the database, so even if this process dies
        # before the index is updated, a deleted face is never returned; the next sync drops it.
        if face_ids:
            self.app.index.remove(np.array(face_ids, dtype=np.int64))
            self.app.index.save()

    def rebuild_index(self, actor: Actor) -> dict[str, int]:
        self.app.authorize(actor, "index.rebuild", "operator", "admin")
        index = self.app._index
        index.reset()
        self.app._index_synced = True
        with self.app.sessions() as session:
            all_ids = list(
                session.scalars(
                    select(Face.id).where(Face.model_id == self.app.model_id).order_by(Face.id)
                )
            )
        for start in range(0, len(all_ids), 5000):
            ids, vecs = self.app.load_templates(all_ids[start : start + 5000])
            index.add(ids, vecs)
        index.save()
        self.app.audit.record(
            actor,
            "index.rebuild",
            model_id=self.app.model_id,
            gallery_size=len(index),
            details={"faces": len(index)},
        )
        return {"faces": len(index)}
