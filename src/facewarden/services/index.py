"""The vector index: a derived cache of the database's templates, kept in one place.

It is reconciled with the database when first used (missing ids added, stale ids dropped,
a sample of vectors checked against the database), catches up with faces other processes
committed, follows deletions, is rebuilt and re-keyed after a key rotation, migrated to
another backend and purged of deleted vectors. The services that change faces (ingest,
deletion, erasure) and those that search call it; nothing else touches the backend."""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from functools import cached_property
from typing import Protocol, runtime_checkable

import numpy as np
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from facewarden.adapters.index.base import FaceLabel, VectorIndex
from facewarden.adapters.index.protection import TransformedIndex
from facewarden.adapters.index.registry import BACKENDS, build_index
from facewarden.adapters.storage.db import purge_deleted_rows
from facewarden.adapters.storage.tables import AuditEvent, Face, Media, Source
from facewarden.config import Settings
from facewarden.core.actors import Actor
from facewarden.core.binding import template_aad
from facewarden.core.errors import InvalidInput, TemplateSpaceMismatch
from facewarden.core.faults import storage_failure
from facewarden.services.access import RoleGuard
from facewarden.services.audit import AuditLog
from facewarden.services.keyring import Keyring
from facewarden.services.models import Models

log = logging.getLogger(__name__)

INDEX_CHECK_SAMPLE = 32  # vectors compared with the database's templates when the index opens
INDEX_CHECK_ATOL = 1e-4  # float32 rounding of the rotation is about 1e-7
INDEX_GAP_TTL_S = 600.0  # how long a missing id below the mark is watched for a late commit
INDEX_GAP_LIMIT = 10_000  # most such ids watched (beyond, the maintenance round's full sync)

# Audit actions that delete templates (their details list the deleted ``face_ids``).
ERASING_ACTIONS = ("delete", "purge", "retention.run", "subject.erase")
# The audit records of completed physical purges.
PURGE_DONE = (AuditEvent.action == "index.purge", AuditEvent.outcome == "ok")


@runtime_checkable
class _VerifiesFiles(Protocol):
    """A backend that verifies its files when it opens (FAISS)."""

    load_problem: str | None
    """Why the files were discarded (None: loaded, none there, or already reported)."""


def _verifying_backend(index: VectorIndex) -> _VerifiesFiles | None:
    """The backend behind the keyed rotation, if it verifies its files."""
    backend = index.inner if isinstance(index, TransformedIndex) else index
    return backend if isinstance(backend, _VerifiesFiles) else None


class IndexService:
    """Owns the vector index of this process (opened on first use)."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        sessions: sessionmaker[Session],
        keyring: Keyring,
        models: Models,
        audit: AuditLog,
        guard: RoleGuard,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.sessions = sessions
        self.keyring = keyring
        self.models = models
        self.audit = audit
        self.guard = guard
        self._space_checked = False
        # The index's subkeys are derived from the template key it was opened under; after a
        # rotation (the keyring's cipher replaced) refill reopens it under the current key.
        self._template_key = keyring.cipher.key
        self._cipher_key_of_index = keyring.cipher.key  # the template key when it was keyed
        self._index_synced = False
        self._index_mark = 0  # largest face id this process's index has caught up to
        self._index_checked = 0.0
        # Ids below the mark that were missing when it passed them: on PostgreSQL a sequence
        # hands out ids before commit, so a lower id can commit later. Watched for a while.
        self._index_gaps: dict[int, float] = {}
        self._catching_up = threading.Lock()

    @property
    def opened(self) -> bool:
        """Whether this process has opened the index (it opens on first use)."""
        return "_index" in self.__dict__

    def close(self) -> None:
        if self._index_synced:
            self.save()
        if self.opened:
            self._index.close()
            del self.__dict__["_index"]
            self._index_synced = False

    def save(self) -> bool:
        """Save the vector index. On a full disk this logs a warning and returns False: the
        index is derived, and the next process to open it reconciles it with the database,
        so a read-only command or a failed write must not fail again here."""
        try:
            self._index.save()
            return True
        except Exception as exc:
            if storage_failure(exc) is None:
                raise
            log.warning("the vector index was not saved (%s); it is reconciled on next open", exc)
            return False

    def check_template_space(self) -> None:
        """Refuse a gallery that holds templates of another recipe than this process makes
        (checked once per process: this process writes its own recipe only)."""
        if self._space_checked:
            return
        with self.sessions() as session:
            other = session.execute(
                select(Face.model_id, func.count())
                .where(Face.model_id != self.models.model_id)
                .group_by(Face.model_id)
            ).first()
        if other is not None:
            flip = other[0].endswith("+flip")
            raise TemplateSpaceMismatch(
                f"the gallery holds {other[1]} templates of recipe {other[0]!r} and this "
                f"configuration makes {self.models.model_id!r}: they cannot be compared. Set "
                f"FACEWARDEN_DESCRIPTOR_FLIP={str(flip).lower()} to use the gallery as it "
                "is, or re-enrol its media under the new recipe into a fresh data directory"
            )
        self._space_checked = True

    @cached_property
    def _index(self) -> VectorIndex:
        return self.open()

    def open(self, backend: str | None = None) -> VectorIndex:
        """A new handle on ``backend`` (default: the configured one), behind this
        deployment's keyed rotation and, for FAISS, sealed with its file key."""
        return build_index(self.settings, self.engine, backend, master_key=self._template_key)

    @property
    def vectors(self) -> VectorIndex:
        """The vector index, reconciled with the database once per process on first use."""
        if not self._index_synced:
            self.sync()
        return self._index

    def sync(self) -> dict[str, int]:
        """Add what the database has and the index lacks; drop what the database no longer has."""
        self.check_template_space()
        self._index_synced = True
        index = self._index
        with self.sessions() as session:
            db_ids = np.fromiter(
                session.scalars(select(Face.id).where(Face.model_id == self.models.model_id)),
                np.int64,
            )
        held = index.ids()
        problem = getattr(index, "load_problem", None) or self._check_index(index, held, db_ids)
        if problem:
            index.reset()
            held = index.ids()
        stale = np.setdiff1d(held, db_ids)
        missing = np.setdiff1d(db_ids, held)
        if len(stale):
            index.remove(stale)
        if len(missing) and hasattr(index, "reserve"):
            index.reserve(len(held) + len(missing))  # a rebuild allocates the vectors once
        self._fill_index(missing.tolist())
        if len(stale) or len(missing) or problem:
            self.save()
        self._index_mark = max(self._index_mark, int(db_ids.max(initial=0)))
        self._index_gaps.clear()
        if problem:
            self._report_damaged_index(problem, len(missing))
        return {"added": len(missing), "removed": len(stale)}

    def _check_index(self, index: VectorIndex, held: np.ndarray, db_ids: np.ndarray) -> str | None:
        """A quick consistency check when the index opens: a random sample of the faces both
        hold must have, in the index, exactly the database's templates (read back through
        the keyed rotation). Catches an index built under another key or another deployment,
        and vectors altered in place (a backend's files that are valid but wrong)."""
        both = np.intersect1d(held, db_ids)
        if len(both) == 0:
            return None
        rng = np.random.default_rng(secrets.randbits(64))
        sample = np.sort(rng.choice(both, size=min(INDEX_CHECK_SAMPLE, len(both)), replace=False))
        ids, want = self.load_templates(sample.tolist())
        found, got = index.vectors(ids)
        order = np.argsort(found)
        if not np.array_equal(found[order], ids):
            return "index lost vectors it lists"
        bad = ~np.all(np.abs(got[order] - want) <= INDEX_CHECK_ATOL, axis=1)
        if bad.any():
            return f"{int(bad.sum())} of {len(ids)} sampled vectors differ from the database"
        return None

    def _report_damaged_index(self, problem: str, refilled: int) -> None:
        """Log (server log and audit log) that the index was discarded and rebuilt."""
        log.warning("vector index discarded (%s); rebuilt with %d faces", problem, refilled)
        try:
            self.audit.record(
                "system",
                "index.damaged",
                outcome="error",
                error=problem,
                details={"backend": self._index.name, "rebuilt_faces": refilled},
            )
        except Exception as exc:  # the rebuild stands; the log line above says what happened
            log.warning("could not audit the index rebuild: %s", exc)
        if (backend := _verifying_backend(self._index)) is not None:
            backend.load_problem = None  # reported: on the backend, not on the rotation

    def catch_up(self) -> int:
        """Index the faces other processes committed since this one last looked (a CLI
        ingest while the server runs): at most once per ``index_catch_up_seconds``, by the
        largest face id (one primary-key lookup), plus the ids that were missing below it
        (a transaction holding them may commit later) for ``INDEX_GAP_TTL_S``. Returns how
        many were added. Deletions need no catching up: every hit is re-checked against the
        database."""
        if not self._index_synced:
            self.sync()  # the first use reconciles the whole index and sets the mark
        now = time.monotonic()
        every_s = self.settings.index_catch_up_seconds
        if now - self._index_checked < every_s or not self._catching_up.acquire(blocking=False):
            return 0
        try:
            self._index_checked = now
            gaps = self._index_gaps
            for face_id in [i for i, until in gaps.items() if until < now]:
                del gaps[face_id]
            mark = self._index_mark
            with self.sessions() as session:
                top = session.scalar(select(func.max(Face.id))) or 0
                if top <= mark and not gaps:
                    return 0
                ours = Face.model_id == self.models.model_id
                late = (
                    list(session.scalars(select(Face.id).where(Face.id.in_(list(gaps)), ours)))
                    if gaps
                    else []
                )
                rows = session.execute(
                    select(Face.id, ours).where(Face.id > mark).order_by(Face.id)
                ).all()
            new = [face_id for face_id, same_model in rows if same_model]
            missing = np.setdiff1d(
                np.arange(max(mark + 1, top + 1 - INDEX_GAP_LIMIT), top + 1),
                np.fromiter((face_id for face_id, _ in rows), np.int64),
            )
            for face_id in late:
                del gaps[face_id]
            gaps.update(dict.fromkeys(missing.tolist(), now + INDEX_GAP_TTL_S))
            while len(gaps) > INDEX_GAP_LIMIT:
                del gaps[next(iter(gaps))]  # the oldest
            self._fill_index(late + new)
            self._index_mark = max(mark, top)
            return len(late) + len(new)
        finally:
            self._catching_up.release()

    def rekey(self, template_key: bytes) -> int:
        """After the template key is rotated (``key rotate``): reopen the index under the new
        key's subkeys and rebuild it (FAISS's old files no longer verify; every backend's
        vectors are rotated anew). Also how a leaked index is renewed. Returns its size."""
        if "_index" in self.__dict__:
            self._index.close()
            del self.__dict__["_index"]
        self._template_key = template_key
        backend = _verifying_backend(self._index)
        if backend is not None and backend.load_problem:
            log.info("index files under the previous key discarded (%s)", backend.load_problem)
            backend.load_problem = None  # expected after a rotation: not damage
        return self.refill()

    def refill(self) -> int:
        """Empty the index and refill it from every template in the database (under the
        current template key's subkeys: after a key rotation, the index is re-keyed)."""
        if self._cipher_key_of_index != self.keyring.cipher.key:  # the template key was rotated
            self._cipher_key_of_index = self.keyring.cipher.key
            return self.rekey(self.keyring.cipher.key)
        problem = getattr(self._index, "load_problem", None)
        self._index.reset()
        self._index_synced = True
        with self.sessions() as session:
            ids = list(
                session.scalars(
                    select(Face.id).where(Face.model_id == self.models.model_id).order_by(Face.id)
                )
            )
        if hasattr(self._index, "reserve"):
            self._index.reserve(len(ids))
        self._fill_index(ids)
        self._index.save()
        self._index_mark = ids[-1] if ids else 0
        if problem:
            self._report_damaged_index(problem, len(ids))
        return len(self._index)

    def _fill_index(self, face_ids: list[int], batch: int = 5000) -> None:
        for start in range(0, len(face_ids), batch):
            self._index.add(*self.labelled_templates(face_ids[start : start + batch]))

    def load_templates(self, face_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(face ids in ascending order, decrypted descriptors) of the faces that exist."""
        ids, vecs, _ = self.labelled_templates(face_ids)
        return ids, vecs

    def labelled_templates(
        self, face_ids: list[int]
    ) -> tuple[np.ndarray, np.ndarray, list[FaceLabel]]:
        """As ``load_templates``, with each face's source and jurisdiction (index filters)."""
        with self.sessions() as session:
            rows = session.execute(
                select(
                    Face.id,
                    Face.template,
                    Face.key_id,
                    Face.face_index,
                    Media.sha256,
                    Source.name,
                    Source.jurisdiction,
                )
                .join(Media, Media.id == Face.media_id)
                .join(Source, Source.id == Media.source_id)
                .where(Face.id.in_(face_ids))
                .order_by(Face.id)
            ).all()
        labels = [FaceLabel(r.name, r.jurisdiction) for r in rows]
        ids = np.array([r.id for r in rows], dtype=np.int64)
        vecs = (
            np.stack(
                [
                    self.keyring.cipher.decrypt_template(
                        r.template, template_aad(r.sha256, r.face_index), r.key_id
                    )
                    for r in rows
                ]
            )
            if rows
            else np.zeros((0, 128), np.float32)
        )
        return ids, vecs, labels

    def drop(self, face_ids: list[int]) -> None:
        # Searches re-check every hit against the database, so even if this process dies
        # before the index is updated, a deleted face is never returned; the next sync drops it.
        if face_ids:
            self.vectors.remove(np.array(face_ids, dtype=np.int64))
            self.vectors.save()

    def pending_erasures(self) -> list[int]:
        """Audit sequence numbers of the deletions since the last ``index.purge``: their
        records are gone, their bytes may not be yet."""
        with self.sessions() as session:
            last = session.scalar(select(func.max(AuditEvent.seq)).where(*PURGE_DONE))
            rows = session.execute(
                select(AuditEvent.seq, AuditEvent.details)
                .where(
                    AuditEvent.seq > (last or 0),
                    AuditEvent.action.in_(ERASING_ACTIONS),
                    AuditEvent.outcome == "ok",
                )
                # In log order (the index on action and seq gives them by action first).
                .order_by(AuditEvent.seq)
            ).all()
        return [seq for seq, details in rows if json.loads(details).get("face_ids")]

    def purge(self, actor: Actor, *, only_if_pending: bool = False) -> dict | None:
        """Physically erase deleted templates: the index backend's removed vectors and the
        database's deleted rows. Logged as ``index.purge`` naming the deletions it covers,
        so every erasure receipt can say when its bytes were gone (``erasure_status``).

        ``only_if_pending``: do nothing (and return None) when no deletion awaits a purge."""
        self.guard.authorize(actor, "index.purge", "operator", "admin", "dpo")
        covers = self.pending_erasures()
        if only_if_pending and not covers:
            return None
        purged = self.vectors.purge()
        report = purged.as_dict()
        report["actions"] = [*purged.actions, *purge_deleted_rows(self.engine)]
        report["covers_audit_seqs"] = covers
        event = self.audit.record(actor, "index.purge", details=report)
        return report | {"purged_at": event.ts, "audit_seq": event.seq}

    def erasure_status(self, audit_seq: int) -> dict[str, object]:
        """When the bytes of the deletion logged at ``audit_seq`` were purged (or pending)."""
        with self.sessions() as session:
            purge = session.execute(
                select(AuditEvent.seq, AuditEvent.ts)
                .where(*PURGE_DONE, AuditEvent.seq > audit_seq)
                .order_by(AuditEvent.seq)
                .limit(1)
            ).first()
        if purge is None:
            return {"bytes_purged_at": None, "purge_audit_seq": None}
        return {"bytes_purged_at": purge.ts, "purge_audit_seq": purge.seq}

    def migrate(self, actor: Actor, backend: str) -> dict[str, object]:
        """Fill ``backend`` from the database's templates (no re-embedding); switch to it by
        setting ``FACEWARDEN_INDEX``."""
        self.guard.authorize(actor, "index.migrate", "admin", details={"to": backend})
        if backend == self.settings.index:
            raise InvalidInput(f"the index is already {backend}")
        if backend not in BACKENDS:
            raise InvalidInput(f"unknown index backend {backend!r}: faiss, pgvector or qdrant")
        target = self.open(backend)
        try:
            target.reset()
            with self.sessions() as session:
                ids = list(
                    session.scalars(
                        select(Face.id)
                        .where(Face.model_id == self.models.model_id)
                        .order_by(Face.id)
                    )
                )
            for start in range(0, len(ids), 5000):
                target.add(*self.labelled_templates(ids[start : start + 5000]))
            target.save()
            moved = len(target)
        finally:
            target.close()
        self.audit.record(
            actor,
            "index.migrate",
            model_id=self.models.model_id,
            gallery_size=moved,
            details={"from": self.settings.index, "to": backend, "faces": moved},
        )
        return {"from": self.settings.index, "to": backend, "faces": moved}

    def rebuild(self, actor: Actor) -> dict[str, int]:
        self.guard.authorize(actor, "index.rebuild", "operator", "admin")
        faces = self.refill()
        self.audit.record(
            actor,
            "index.rebuild",
            model_id=self.models.model_id,
            gallery_size=faces,
            details={"faces": faces},
        )
        return {"faces": faces}
