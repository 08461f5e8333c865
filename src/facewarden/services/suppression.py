"""The suppression list: the templates of the people who had themselves erased. Ingest does
not store a face near one; search does not return one (unless the DPO released it)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from facewarden.adapters.storage.tables import SubjectRequest
from facewarden.config import Settings
from facewarden.core.binding import suppression_aad
from facewarden.services.keyring import Keyring


@dataclass(frozen=True)
class Suppression:
    """The erased people's templates and the faces the DPO released after review."""

    mark: int | None = None
    templates: np.ndarray = field(default_factory=lambda: np.zeros((0, 128), np.float32))
    released: frozenset[int] = frozenset()


def erasure_mark_query():
    """The newest erasure request: the suppression list changes only with a new one."""
    return select(func.max(SubjectRequest.id)).where(SubjectRequest.kind == "erasure")


class SuppressionList:
    def __init__(
        self, settings: Settings, sessions: sessionmaker[Session], keyring: Keyring
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.keyring = keyring
        self._suppression = Suppression()
        self._suppression_lock = threading.Lock()

    def templates(self) -> np.ndarray:
        """The erased people's templates (selfies and erased faces), decrypted for ingest
        and search to compare against."""
        with self.sessions() as session:
            return self._load_suppression(session, None).templates

    def _load_suppression(self, session, mark: int | None) -> Suppression:
        rows = session.execute(
            select(
                SubjectRequest.id,
                SubjectRequest.suppression_template,
                SubjectRequest.receipt,
                SubjectRequest.key_id,
            ).where(SubjectRequest.kind == "erasure")
        ).all()
        decrypt = self.keyring.cipher.decrypt
        vecs = [
            np.frombuffer(decrypt(t, suppression_aad(i), k), dtype="<f4").reshape(-1, 128)
            for i, t, _, k in rows
            if t is not None
        ]
        released = frozenset(f for _, _, r, _ in rows if r for f in r.get("released", []))
        templates = np.concatenate(vecs) if vecs else np.zeros((0, 128), np.float32)
        return Suppression(mark, templates, released)

    def current(self, conn) -> Suppression:
        """The current suppression list (reloaded only after a new erasure request);
        ``conn`` is a connection or session to read the erasure mark with."""
        mark = conn.execute(erasure_mark_query()).scalar()
        current = self._suppression
        if mark is None:
            return Suppression()
        if current.mark == mark:
            return current
        with self._suppression_lock:
            if self._suppression.mark != mark:
                with self.sessions() as session:
                    self._suppression = self._load_suppression(session, mark)
            return self._suppression

    def withheld(self, conn, face_ids: Sequence[int], vecs: np.ndarray) -> np.ndarray:
        """Mask of the faces search must not return: within the search threshold of an
        erased person's template, unless the DPO released them after review."""
        sup = self.current(conn)
        out = np.zeros(len(face_ids), dtype=bool)
        if not len(sup.templates) or not len(face_ids):
            return out
        limit = self.settings.threshold + 1e-6
        d2 = (
            np.sum(vecs * vecs, axis=1)[:, None]
            + np.sum(sup.templates * sup.templates, axis=1)[None, :]
            - 2 * vecs @ sup.templates.T
        )
        near = np.min(d2, axis=1) <= limit * limit
        released = sup.released
        for n, face_id in enumerate(face_ids):
            out[n] = bool(near[n]) and face_id not in released
        return out
