"""Key management that fails safe: which key the data needs, and key rotation.

The database records, in ``encryption_keys``, the id of the key the data is encrypted under
(never the key). A process refuses to start when it does not hold every key the data needs
(``key_missing``, or ``wrong_key`` when it holds another key), naming the ids; it refuses to
write under a key that is no longer the current one; and ``init`` never makes a new key while
data encrypted under another exists.

Rotation (``facewarden key rotate``) writes the new key next to the key file (``.new``), keeps
the old one (``.old``) until every record is re-encrypted, switches the registry and the key
file, re-encrypts in batches (each batch one transaction; a re-run resumes where a crash left
off), then retires the old key, removes its file and rebuilds the index."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from facewarden.adapters.crypto import (
    KeyMissing,
    TemplateCipher,
    WrongKey,
    create_key_file,
    key_id_of,
    parse_key,
    pending_key_path,
    read_key_file,
    retiring_key_path,
    write_key_file,
)
from facewarden.adapters.storage.db import erasure_lock, session_factory, transaction
from facewarden.adapters.storage.tables import (
    Case,
    CaseSearch,
    EncryptionKey,
    Face,
    FaceCrop,
    Media,
    ProbeFace,
    SubjectRequest,
)
from facewarden.config import Settings
from facewarden.core.actors import Actor
from facewarden.core.binding import (
    crop_aad,
    probe_aad,
    probe_face_aad,
    suppression_aad,
    template_aad,
)
from facewarden.core.clock import utcnow
from facewarden.core.errors import FacewardenError, NotInitialised, Refused
from facewarden.services.access import RoleGuard
from facewarden.services.audit import AuditLog
from facewarden.services.index import IndexService
from facewarden.services.keyring import Keyring

Progress = Callable[[str], None]


def load_cipher(settings: Settings) -> TemplateCipher | None:
    """The configured key (environment, else key file) with the keys of a rotation in
    progress; None when there is no key at all. The cipher reloads the key files when a value
    names a key it does not hold (a rotation finished by another process)."""
    if settings.template_key:
        return TemplateCipher(parse_key(settings.template_key.get_secret_value()))
    path = settings.resolved_key_file
    if not path.is_file():
        return None
    others = []
    for p in (pending_key_path(path), retiring_key_path(path)):
        with contextlib.suppress(FileNotFoundError):  # a rotation removed it meanwhile
            others.append(read_key_file(p))
    return TemplateCipher(read_key_file(path), others, reload=lambda: _reload(settings))


def _reload(settings: Settings) -> TemplateCipher | None:
    try:
        return load_cipher(settings)
    except (OSError, FacewardenError):
        return None


def key_source(settings: Settings) -> str:
    if settings.template_key:
        return "FACEWARDEN_TEMPLATE_KEY"
    return f"key file {settings.resolved_key_file}"


def needed_keys(session: Session) -> dict[str, str]:
    """{key id: state} of the keys data may be encrypted under (current and retiring)."""
    rows = session.execute(
        select(EncryptionKey.key_id, EncryptionKey.state).where(EncryptionKey.state != "retired")
    ).all()
    return {k: s for k, s in rows}


def encrypted_data_exists(session: Session) -> bool:
    return bool(
        session.scalar(select(exists().where(Face.id.is_not(None))))
        or session.scalar(select(exists().where(FaceCrop.face_id.is_not(None))))
        or session.scalar(select(exists().where(CaseSearch.probe_templates.is_not(None))))
        or session.scalar(select(exists().where(SubjectRequest.suppression_template.is_not(None))))
    )


def _missing_message(settings: Settings, ids: list[str]) -> str:
    return (
        f"the data is encrypted under the key with id {', '.join(ids)}, and "
        f"{key_source(settings)} does not hold it: restore that key from its backup "
        "(to the key file, FACEWARDEN_KEY_FILE or FACEWARDEN_TEMPLATE_KEY). No new key is "
        "created while data needs this one"
    )


def check_keys(settings: Settings, engine: Engine, cipher: TemplateCipher | None) -> None:
    """Refuse to run without every key the data needs; register the key of a database that
    records none yet."""
    with session_factory(engine)() as session:
        needed = needed_keys(session)
    if cipher is None:
        if needed:
            raise KeyMissing(
                f"template key file {settings.resolved_key_file} not found; "
                + _missing_message(settings, sorted(needed))
            )
        raise NotInitialised(
            f"template key file {settings.resolved_key_file} not found: run 'facewarden init'"
        )
    if not needed:
        try:
            with transaction(session_factory(engine, write=True)) as session:
                if not needed_keys(session):
                    session.add(
                        EncryptionKey(key_id=cipher.key_id, state="current", created_at=utcnow())
                    )
        except IntegrityError:
            pass  # another process registered it meanwhile
        return
    missing = sorted(set(needed) - cipher.held_key_ids)
    if missing:
        error = WrongKey if cipher.key_id not in needed else KeyMissing
        raise error(
            f"the configured key has id {cipher.key_id}; " + _missing_message(settings, missing)
        )


def prepare_init(settings: Settings, engine: Engine) -> None:
    """Before ``init`` makes a key: refuse while data needs another key; forget the key of a
    database that holds nothing encrypted (a lost key that sealed nothing)."""
    if settings.template_key or settings.resolved_key_file.exists():
        return
    with transaction(session_factory(engine, write=True)) as session:
        needed = needed_keys(session)
        if not needed:
            return
        if encrypted_data_exists(session):
            raise KeyMissing(
                f"template key file {settings.resolved_key_file} not found; "
                + _missing_message(settings, sorted(needed))
            )
        session.execute(delete(EncryptionKey))


class KeyService:
    def __init__(
        self,
        *,
        settings: Settings,
        sessions: sessionmaker[Session],
        writes: sessionmaker[Session],
        audit: AuditLog,
        guard: RoleGuard,
        keyring: Keyring,
        index: IndexService,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.writes = writes
        self.audit = audit
        self.guard = guard
        self.keyring = keyring
        self.index = index

    def writing(self, session: Session) -> TemplateCipher:
        """The cipher to encrypt with inside ``session``'s write transaction: refused when the
        data is now written under another key (a rotation ran since this process started)."""
        cipher = self.keyring.cipher
        current = session.scalar(
            select(EncryptionKey.key_id).where(EncryptionKey.state == "current")
        )
        if current != cipher.key_id:
            fresh = load_cipher(self.settings)  # the rotation's new key, once it is in place
            if fresh is not None and fresh.key_id == current:
                self.keyring.cipher = fresh
                return fresh
            raise WrongKey(
                f"new data is written under key {current}, but this process holds key "
                f"{cipher.key_id} as current (a key rotation ran or is running): finish it "
                "with 'facewarden key rotate' and restart this process"
            )
        return cipher

    def status(self, actor: Actor) -> dict[str, Any]:
        self.guard.authorize(actor, "key.status", "admin", "dpo", "auditor")
        with self.sessions() as session:
            keys = session.execute(
                select(EncryptionKey.key_id, EncryptionKey.state, EncryptionKey.retired_at)
            ).all()
            counts = {
                "faces": dict(
                    session.execute(select(Face.key_id, func.count()).group_by(Face.key_id)).all()
                ),
            }
        return {
            "configured_key": self.keyring.cipher.key_id,
            "key_source": key_source(self.settings),
            "keys": [
                {"key_id": k, "state": s, "retired_at": r.isoformat() if r else None}
                for k, s, r in keys
            ],
            **counts,
        }

    # -- rotation ----------------------------------------------------------------------
    def rotate(self, actor: Actor, progress: Progress | None = None) -> dict[str, Any]:
        """Re-encrypt every template, crop, kept probe and suppression entry under a new key;
        resumable: run it again after a crash and it goes on where it stopped."""
        settings = self.settings
        self.guard.authorize(actor, "key.rotate", "admin")
        say = progress or (lambda _: None)
        if settings.template_key:
            raise Refused(
                "the template key comes from FACEWARDEN_TEMPLATE_KEY: rotation writes key "
                "files, so move the key to a key file (FACEWARDEN_KEY_FILE) first"
            )
        path = settings.resolved_key_file
        new_path, old_path = pending_key_path(path), retiring_key_path(path)
        with self.sessions() as session:
            needed = needed_keys(session)
        retiring = [k for k, s in needed.items() if s == "retiring"]
        if not retiring and old_path.is_file():
            finished = self._finish_committed(actor, old_path, say)
            if finished is not None:
                return finished
        if not retiring:
            old_key = read_key_file(path)
            try:
                new_key = create_key_file(new_path)
            except FileExistsError:  # made by a run that stopped before switching
                new_key = read_key_file(new_path)
            old_id, new_id = key_id_of(old_key), key_id_of(new_key)
            write_key_file(old_path, old_key, replace=True)
            with transaction(self.writes) as session:
                erasure_lock(session)  # one rotation switches; a concurrent one resumes
                if not any(s == "retiring" for s in needed_keys(session).values()):
                    session.execute(
                        update(EncryptionKey)
                        .where(EncryptionKey.key_id == old_id)
                        .values(state="retiring")
                    )
                    session.add(EncryptionKey(key_id=new_id, state="current", created_at=utcnow()))
                    self.audit.append(
                        session,
                        actor,
                        "key.rotate",
                        outcome="started",
                        details={"old_key": old_id, "new_key": new_id},
                    )
                needed = needed_keys(session)
            retiring = [k for k, s in needed.items() if s == "retiring"]
            new_id = next(k for k, s in needed.items() if s == "current")
            say(f"rotation started: key {', '.join(retiring)} -> {new_id}")
        else:
            new_id = next(k for k, s in needed.items() if s == "current")
            say(f"resuming rotation: key {', '.join(retiring)} -> {new_id}")
        # The key file holds the new key from here on (atomic rename).
        if key_id_of(read_key_file(path)) != new_id:
            if not new_path.is_file() or key_id_of(read_key_file(new_path)) != new_id:
                raise KeyMissing(f"the rotation's new key {new_id} is not at {new_path}")
            os.replace(new_path, path)
            _fsync_dir(path)
        new_key = read_key_file(path)
        olds = {key_id_of(read_key_file(old_path))} if old_path.is_file() else set()
        cipher = TemplateCipher(new_key, [read_key_file(old_path)] if olds else [])
        self.keyring.cipher = cipher
        counts = {"faces": 0, "crops": 0, "probes": 0, "probe_faces": 0, "suppression": 0}
        legacy = retiring[0]  # values stored without a key id were sealed under the old key
        batch = settings.key_rotate_batch
        while True:
            before = sum(counts.values())
            for kind, step in (
                ("faces", self._faces),
                ("crops", self._crops),
                ("probes", self._probes),
                ("probe_faces", self._probe_faces),
                ("suppression", self._suppression),
            ):
                after = 0  # keyset pagination: each batch starts past the last one
                while True:
                    done, after = step(cipher, new_id, legacy, batch, after)
                    if not done:
                        break
                    counts[kind] += done
                    say(f"re-encrypted {counts[kind]} {kind}")
            with transaction(self.writes) as session:
                erasure_lock(session)  # no ingest under the old key is in flight
                remaining = self._remaining(session, new_id)
                if remaining and sum(counts.values()) == before:
                    raise FacewardenError(
                        f"{remaining} encrypted values under the old key could not be "
                        "re-encrypted; the rotation stays open (run it again)"
                    )
                if remaining:
                    continue
                session.execute(
                    update(EncryptionKey)
                    .where(EncryptionKey.key_id.in_(retiring))
                    .values(state="retired", retired_at=utcnow())
                )
                self.audit.append(
                    session,
                    actor,
                    "key.rotate",
                    details={"old_key": ",".join(retiring), "new_key": new_id} | counts,
                )
            break
        old_path.unlink(missing_ok=True)
        _fsync_dir(path)
        say(f"old key {', '.join(retiring)} retired; its file {old_path} removed")
        indexed = self.index.rebuild(actor)
        say(f"index rebuilt: {indexed}")
        return {"old_key": ",".join(retiring), "new_key": new_id, **counts}

    def _finish_committed(
        self, actor: Actor, old_path: Path, say: Progress
    ) -> dict[str, Any] | None:
        """A rotation that committed but stopped before removing the old key file and
        rebuilding the index: do those two steps (and start no new rotation)."""
        old_id = key_id_of(read_key_file(old_path))
        with self.sessions() as session:
            state = session.scalar(
                select(EncryptionKey.state).where(EncryptionKey.key_id == old_id)
            )
        if state != "retired":
            return None
        old_path.unlink(missing_ok=True)
        _fsync_dir(old_path)
        say(f"finishing the previous rotation: old key {old_id} retired; its file removed")
        indexed = self.index.rebuild(actor)
        say(f"index rebuilt: {indexed}")
        zero = {"faces": 0, "crops": 0, "probes": 0, "probe_faces": 0, "suppression": 0}
        return {"old_key": old_id, "new_key": self.keyring.cipher.key_id, **zero}

    @staticmethod
    def _stale(column, new_id: str):
        return or_(column.is_(None), column != new_id)

    def _remaining(self, session: Session, new_id: str) -> int:
        return sum(
            session.scalar(select(func.count()).select_from(table).where(cond)) or 0
            for table, cond in (
                (Face, self._stale(Face.key_id, new_id)),
                (FaceCrop, self._stale(FaceCrop.key_id, new_id)),
                (
                    CaseSearch,
                    CaseSearch.probe_templates.is_not(None)
                    & self._stale(CaseSearch.key_id, new_id),
                ),
                (ProbeFace, self._stale(ProbeFace.key_id, new_id)),
                (
                    SubjectRequest,
                    SubjectRequest.suppression_template.is_not(None)
                    & self._stale(SubjectRequest.key_id, new_id),
                ),
            )
        )

    def _faces(
        self, cipher: TemplateCipher, new_id: str, legacy: str, batch: int, after: int
    ) -> tuple[int, int]:

        with transaction(self.writes) as session:
            rows = session.execute(
                select(Face.id, Face.template, Face.key_id, Face.face_index, Media.sha256)
                .join(Media, Media.id == Face.media_id)
                .where(Face.id > after, self._stale(Face.key_id, new_id))
                .order_by(Face.id)
                .limit(batch)
            ).all()
            changes = []
            for r in rows:
                aad = template_aad(r.sha256, r.face_index)
                plain = cipher.decrypt(r.template, aad, r.key_id or legacy)
                changes.append(
                    {"id": r.id, "template": cipher.encrypt(plain, aad), "key_id": new_id}
                )
            if changes:
                session.execute(update(Face), changes)  # bulk, by primary key
            return len(rows), (rows[-1].id if rows else after)

    def _crops(
        self, cipher: TemplateCipher, new_id: str, legacy: str, batch: int, after: int
    ) -> tuple[int, int]:

        with transaction(self.writes) as session:
            rows = session.execute(
                select(
                    FaceCrop.face_id, FaceCrop.data, FaceCrop.key_id, Face.face_index, Media.sha256
                )
                .join(Face, Face.id == FaceCrop.face_id)
                .join(Media, Media.id == Face.media_id)
                .where(FaceCrop.face_id > after, self._stale(FaceCrop.key_id, new_id))
                .order_by(FaceCrop.face_id)
                .limit(batch)
            ).all()
            changes = []
            for r in rows:
                aad = crop_aad(r.sha256, r.face_index)
                plain = cipher.decrypt(r.data, aad, r.key_id or legacy)
                changes.append(
                    {"face_id": r.face_id, "data": cipher.encrypt(plain, aad), "key_id": new_id}
                )
            if changes:
                session.execute(update(FaceCrop), changes)
            return len(rows), (rows[-1].face_id if rows else after)

    def _probes(
        self, cipher: TemplateCipher, new_id: str, legacy: str, batch: int, after: int
    ) -> tuple[int, int]:

        with transaction(self.writes) as session:
            rows = session.execute(
                select(
                    CaseSearch.id,
                    CaseSearch.probe_templates,
                    CaseSearch.key_id,
                    CaseSearch.probe_sha256,
                    Case.ref,
                )
                .join(Case, Case.id == CaseSearch.case_id)
                .where(
                    CaseSearch.id > after,
                    CaseSearch.probe_templates.is_not(None),
                    self._stale(CaseSearch.key_id, new_id),
                )
                .order_by(CaseSearch.id)
                .limit(batch)
            ).all()
            for r in rows:
                aad = probe_aad(r.ref, r.probe_sha256)
                plain = cipher.decrypt(r.probe_templates, aad, r.key_id or legacy)
                session.execute(
                    update(CaseSearch)
                    .where(CaseSearch.id == r.id)
                    .values(probe_templates=cipher.encrypt(plain, aad), key_id=new_id)
                )
            return len(rows), (rows[-1].id if rows else after)

    def _probe_faces(
        self, cipher: TemplateCipher, new_id: str, legacy: str, batch: int, after: int
    ) -> tuple[int, int]:
        """The probe face crops kept with cases for review."""

        with transaction(self.writes) as session:
            rows = session.execute(
                select(ProbeFace.id, ProbeFace.search_id, ProbeFace.face_index, ProbeFace.data)
                .add_columns(ProbeFace.key_id)
                .where(ProbeFace.id > after, self._stale(ProbeFace.key_id, new_id))
                .order_by(ProbeFace.id)
                .limit(batch)
            ).all()
            changes = []
            for r in rows:
                aad = probe_face_aad(r.search_id, r.face_index)
                plain = cipher.decrypt(r.data, aad, r.key_id or legacy)
                changes.append({"id": r.id, "data": cipher.encrypt(plain, aad), "key_id": new_id})
            if changes:
                session.execute(update(ProbeFace), changes)  # bulk, by primary key
            return len(rows), (rows[-1].id if rows else after)

    def _suppression(
        self, cipher: TemplateCipher, new_id: str, legacy: str, batch: int, after: int
    ) -> tuple[int, int]:

        with transaction(self.writes) as session:
            rows = session.execute(
                select(
                    SubjectRequest.id, SubjectRequest.suppression_template, SubjectRequest.key_id
                )
                .where(
                    SubjectRequest.id > after,
                    SubjectRequest.suppression_template.is_not(None),
                    self._stale(SubjectRequest.key_id, new_id),
                )
                .order_by(SubjectRequest.id)
                .limit(batch)
            ).all()
            for r in rows:
                aad = suppression_aad(r.id)
                plain = cipher.decrypt(r.suppression_template, aad, r.key_id or legacy)
                session.execute(
                    update(SubjectRequest)
                    .where(SubjectRequest.id == r.id)
                    .values(suppression_template=cipher.encrypt(plain, aad), key_id=new_id)
                )
            return len(rows), (rows[-1].id if rows else after)


def _fsync_dir(path) -> None:
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
