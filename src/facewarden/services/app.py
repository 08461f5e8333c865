"""The application core: one object every interface (CLI, HTTP, UI, Python) goes through."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import time
from functools import cached_property
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import OperationalError

from facewarden.adapters.crypto import (
    KeyMissing,
    TemplateCipher,
    create_key_file,
    parse_key,
    read_key_file,
)
from facewarden.adapters.index.base import FaceLabel, VectorIndex
from facewarden.adapters.index.protection import TransformedIndex
from facewarden.adapters.index.registry import build_index
from facewarden.adapters.storage import db
from facewarden.adapters.storage.faults import storage_failure
from facewarden.adapters.storage.tables import AuditEvent, Face, Media, Source, User
from facewarden.config import Settings
from facewarden.core.actors import SINGLE_OPERATOR_ROLES, Actor
from facewarden.core.binding import crop_aad, template_aad  # noqa: F401 (re-exported)
from facewarden.core.clock import utcnow
from facewarden.core.errors import (
    ConfigurationError,
    NotFound,
    NotInitialised,
    PermissionDenied,
    TemplateSpaceMismatch,
    Unauthenticated,
)
from facewarden.core.pipeline import FacePipeline, template_space_id
from facewarden.services.audit import AnchorFile, AuditLog
from facewarden.services.keys import KeyService, check_keys, load_cipher, prepare_init
from facewarden.services.probes import Probe, ProbePool, analyse

log = logging.getLogger(__name__)

INDEX_CHECK_SAMPLE = 32  # vectors compared with the database's templates when the index opens
INDEX_CHECK_ATOL = 1e-4  # float32 rounding of the rotation is about 1e-7
INDEX_GAP_TTL_S = 600.0  # how long a missing id below the mark is watched for a late commit
INDEX_GAP_LIMIT = 10_000  # most such ids watched (beyond, the maintenance round's full sync)


@runtime_checkable
class _VerifiesFiles(Protocol):
    """A backend that verifies its files when it opens (FAISS)."""

    load_problem: str | None
    """Why the files were discarded (None: loaded, none there, or already reported)."""


def _verifying_backend(index: VectorIndex) -> _VerifiesFiles | None:
    """The backend behind the keyed rotation, if it verifies its files."""
    backend = index.inner if isinstance(index, TransformedIndex) else index
    return backend if isinstance(backend, _VerifiesFiles) else None


class Facewarden:
    """Owns the database, the key, the index and the models; services hang off it."""

    def __init__(self, settings: Settings, pipeline: FacePipeline | None = None) -> None:
        self.settings = settings
        self._space_checked = False
        check_production(settings)
        private_files()
        self.engine = db.make_engine(settings.resolved_database_url)
        try:
            current = inspect(self.engine).has_table("alembic_version") and db.is_current(
                self.engine
            )
        except OperationalError as exc:
            raise NotInitialised(
                f"cannot open database ({exc.orig}): run 'facewarden init' first "
                f"(data directory {settings.data_dir})"
            ) from exc
        if not current:
            raise NotInitialised(
                f"no facewarden database at {self.engine.url.render_as_string()}: "
                "run 'facewarden init' (or it needs migrating: 'facewarden init' upgrades it)"
            )
        self.single_reads = db.single_read(self.engine)
        self.sessions = db.session_factory(self.engine)
        self.writes = db.session_factory(self.engine, write=True)
        cipher = load_cipher(settings)
        check_keys(settings, self.engine, cipher)  # raises without every key the data needs
        if cipher is None:  # pragma: no cover - check_keys raised already
            raise NotInitialised("no template key")
        self.cipher: TemplateCipher = cipher
        # The index's subkeys are derived from the template key it was opened under; after a
        # rotation (self.cipher replaced) rebuild_index reopens it under the current key.
        self._template_key = cipher.key
        self._cipher_key_of_index = cipher.key  # the template key when the index was keyed
        audit_key = load_audit_key(settings, self.engine)
        self.audit = AuditLog(
            self.sessions,
            self.writes,
            audit_key,
            AnchorFile(
                settings.resolved_anchor_file,
                audit_key,
                settings.audit_anchor_every,
                settings.audit_anchor_seconds,
            ),
        )
        self.keys = KeyService(self)
        self._pipeline = pipeline
        self.probes: ProbePool | None = None
        """The server's probe workers (``serve`` sets them); None: probes in process."""
        self._index_synced = False
        self._index_mark = 0  # largest face id this process's index has caught up to
        self._index_checked = 0.0
        # Ids below the mark that were missing when it passed them: on PostgreSQL a sequence
        # hands out ids before commit, so a lower id can commit later. Watched for a while.
        self._index_gaps: dict[int, float] = {}
        self._catching_up = threading.Lock()

        from facewarden.services.backup import BackupService
        from facewarden.services.cases import CaseService
        from facewarden.services.confirmations import ConfirmationService
        from facewarden.services.gallery import GalleryService
        from facewarden.services.ingest import IngestService
        from facewarden.services.oversight import OversightService
        from facewarden.services.records import RecordsService
        from facewarden.services.redaction import RedactionService
        from facewarden.services.review import ReviewService
        from facewarden.services.search import SearchService
        from facewarden.services.sources import SourceService
        from facewarden.services.subject_records import SubjectRecordService
        from facewarden.services.subjects import SubjectService
        from facewarden.services.users import UserService
        from facewarden.services.video import VideoSearchService

        self.sources = SourceService(self)
        self.cases = CaseService(self)
        self.ingest = IngestService(self)
        self.search = SearchService(self)
        self.video = VideoSearchService(self)
        self.redaction = RedactionService(self)
        self.gallery = GalleryService(self)
        self.users = UserService(self)
        self.confirmations = ConfirmationService(self)
        self.subjects = SubjectService(self)
        self.subject_records = SubjectRecordService(self)
        self.review = ReviewService(self)
        self.records = RecordsService(self)
        self.oversight = OversightService(self)
        self.backups = BackupService(self)

    # -- setup -------------------------------------------------------------------------
    @classmethod
    def init(
        cls, settings: Settings, admin_name: str = "admin", pipeline: FacePipeline | None = None
    ) -> tuple[Facewarden, str | None]:
        """Create the data directory, database schema, key file and the first user.

        Returns the app and the first user's API token (shown once), or None when the
        database already had users (init is idempotent and upgrades the schema).
        """
        private_files()
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # An installation made by an earlier version: its directories become private too.
        for top, _, _ in os.walk(settings.data_dir):
            Path(top).chmod(0o700)
        url = settings.resolved_database_url
        if url.startswith("sqlite:///"):
            # SQLite gives its WAL and shared-memory files the database file's mode.
            database = Path(url.removeprefix("sqlite:///"))
            if database.parent.is_dir():
                os.close(os.open(database, os.O_RDWR | os.O_CREAT, 0o600))
                for f in database.parent.glob(database.name + "*"):
                    f.chmod(0o600)
        engine = db.make_engine(url)
        db.upgrade(engine)
        # No new key while data encrypted under another key exists (a lost key is restored
        # from its backup, never replaced).
        prepare_init(settings, engine)
        if not settings.template_key and not settings.resolved_key_file.exists():
            create_key_file(settings.resolved_key_file)
        prepare_audit_key(settings, engine)
        engine.dispose()
        app = cls(settings, pipeline)
        token = None
        # The anchor file is created with the MAC chain, never later (see AnchorFile.write).
        start_anchors = not app.audit.has_mac_records()
        if start_anchors and app.audit.anchors is not None:
            # Create it now, so the records init writes below are anchored as they commit.
            app.audit.anchors.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(app.audit.anchors.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        with db.transaction(app.writes) as session:
            last = session.execute(
                select(AuditEvent.seq, AuditEvent.hash, AuditEvent.chain)
                .order_by(AuditEvent.seq.desc())
                .limit(1)
            ).first()
            if last is not None and last.chain == 1:
                # The switch from the unkeyed chain to the MAC'd one, itself MAC'd.
                app.audit.append(
                    session,
                    "facewarden init",
                    "audit.mac",
                    details={"continues_seq": last.seq, "continues_hash": last.hash},
                )
        with db.transaction(app.writes) as session:
            if session.scalar(select(func.count(User.id))) == 0:
                token = secrets.token_urlsafe(32)
                session.add(
                    User(
                        name=admin_name,
                        roles=",".join(SINGLE_OPERATOR_ROLES),
                        token_hash=hash_token(token),
                        active=True,
                        created_at=utcnow(),
                        token_issued_at=utcnow(),
                    )
                )
                app.audit.append(
                    session,
                    admin_name,
                    "init",
                    details={"user": admin_name, "roles": list(SINGLE_OPERATOR_ROLES)},
                )
        anchors = app.audit.anchors
        if anchors is not None and (start_anchors or anchors.path.exists()):
            app.audit.anchor_now(create=start_anchors)
        return app, token

    def analyse_probe(self, data: bytes) -> Probe:
        """A probe's faces, decoded at a bounded size and capped (see ``services.probes``):
        in the server's probe workers, else in this process."""
        if self.probes is not None:
            return self.probes.analyse(data)
        return analyse(self.pipeline, data, self.settings)

    def save_index(self) -> bool:
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

    def close(self) -> None:
        if self.probes is not None:
            self.probes.close()
            self.probes = None
        if self._index_synced:
            self.save_index()
        if "_index" in self.__dict__:
            self._index.close()
            del self.__dict__["_index"]
            self._index_synced = False
        self.engine.dispose()

    # -- users and roles ---------------------------------------------------------------
    def actor(
        self,
        name: str | None = None,
        token: str | None = None,
        *,
        token_hash: str | None = None,
        allow_expired: bool = False,
    ) -> Actor:
        """The acting user, authenticated by API token (or its hash). ``name`` alone is the
        in-process look-up of a trusted caller that already holds the database and the key
        (tests, the demo, scripts): no interface passes a bare name."""
        if token:
            token_hash = hash_token(token)
        if token_hash:
            return self.users.authenticate(token_hash, allow_expired=allow_expired)
        if not name:
            raise Unauthenticated(
                "no credential: set FACEWARDEN_TOKEN to your API token "
                "(or store it with 'facewarden login')"
            )
        with self.sessions() as session:
            user = session.scalar(select(User).where(User.active.is_(True), User.name == name))
            if user is None:
                raise NotFound(f"no active user named {name!r}")
            return Actor(user.name, frozenset(user.roles.split(",")))

    def authorize(self, actor: Actor, action: str, *roles: str, **audit_fields) -> None:
        """Refuse (and log the refusal) unless the actor holds one of ``roles``."""
        if actor.has(*roles):
            return
        message = f"{actor.name} may not {action}: needs role {' or '.join(roles)}"
        self.audit.record(actor, action, outcome="refused", error=message, **audit_fields)
        raise PermissionDenied(message)

    # -- models and index --------------------------------------------------------------
    @property
    def pipeline(self) -> FacePipeline:
        if self._pipeline is None:
            self._pipeline = build_pipeline(self.settings)
        return self._pipeline

    @cached_property
    def model_id(self) -> str:
        from facewarden.adapters.models.dlib_models import FivePointAligner, ResnetEmbedder

        return template_space_id(
            ResnetEmbedder.model_id, FivePointAligner.model_id, self.settings.descriptor_flip
        )

    def check_template_space(self) -> None:
        """Refuse a gallery that holds templates of another recipe than this process makes
        (checked once per process: this process writes its own recipe only)."""
        if self._space_checked:
            return
        with self.sessions() as session:
            other = session.execute(
                select(Face.model_id, func.count())
                .where(Face.model_id != self.model_id)
                .group_by(Face.model_id)
            ).first()
        if other is not None:
            flip = other[0].endswith("+flip")
            raise TemplateSpaceMismatch(
                f"the gallery holds {other[1]} templates of recipe {other[0]!r} and this "
                f"configuration makes {self.model_id!r}: they cannot be compared. Set "
                f"FACEWARDEN_DESCRIPTOR_FLIP={str(flip).lower()} to use the gallery as it "
                "is, or re-enrol its media under the new recipe into a fresh data directory"
            )
        self._space_checked = True

    @cached_property
    def _index(self) -> VectorIndex:
        return self.open_index()

    def open_index(self, backend: str | None = None) -> VectorIndex:
        """A new handle on ``backend`` (default: the configured one), behind this
        deployment's keyed rotation and, for FAISS, sealed with its file key."""
        return build_index(self.settings, self.engine, backend, master_key=self._template_key)

    @property
    def index(self) -> VectorIndex:
        """The vector index, reconciled with the database once per process on first use."""
        if not self._index_synced:
            self.sync_index()
        return self._index

    def sync_index(self) -> dict[str, int]:
        """Add what the database has and the index lacks; drop what the database no longer has."""
        self.check_template_space()
        self._index_synced = True
        index = self._index
        with self.sessions() as session:
            db_ids = np.fromiter(
                session.scalars(select(Face.id).where(Face.model_id == self.model_id)), np.int64
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
            self.save_index()
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

    def catch_up_index(self) -> int:
        """Index the faces other processes committed since this one last looked (a CLI
        ingest while the server runs): at most once per ``index_catch_up_seconds``, by the
        largest face id (one primary-key lookup), plus the ids that were missing below it
        (a transaction holding them may commit later) for ``INDEX_GAP_TTL_S``. Returns how
        many were added. Deletions need no catching up: every hit is re-checked against the
        database."""
        if not self._index_synced:
            self.sync_index()  # the first use reconciles the whole index and sets the mark
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
                ours = Face.model_id == self.model_id
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

    def rekey_index(self, template_key: bytes) -> int:
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
        return self.rebuild_index()

    def rebuild_index(self) -> int:
        """Empty the index and refill it from every template in the database (under the
        current template key's subkeys: after a key rotation, the index is re-keyed)."""
        if self._cipher_key_of_index != self.cipher.key:  # the template key was rotated
            self._cipher_key_of_index = self.cipher.key
            return self.rekey_index(self.cipher.key)
        problem = getattr(self._index, "load_problem", None)
        self._index.reset()
        self._index_synced = True
        with self.sessions() as session:
            ids = list(
                session.scalars(
                    select(Face.id).where(Face.model_id == self.model_id).order_by(Face.id)
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
                    self.cipher.decrypt_template(
                        r.template, template_aad(r.sha256, r.face_index), r.key_id
                    )
                    for r in rows
                ]
            )
            if rows
            else np.zeros((0, 128), np.float32)
        )
        return ids, vecs, labels

    def gallery_size(self, session) -> int:
        return (
            session.scalar(
                select(func.count(Face.id))
                .join(Media)
                .where(Media.expires_at > utcnow(), Media.restricted.is_(False))
            )
            or 0
        )

    def stats(self) -> dict[str, object]:
        index_size = len(self.index)
        with self.sessions() as session:
            return {
                "sources": session.scalar(select(func.count(Source.id))),
                "media": session.scalar(select(func.count(Media.id))),
                "faces": session.scalar(select(func.count(Face.id))),
                "searchable_faces": self.gallery_size(session),
                "index_size": index_size,
                "index_backend": self._index.name,
                "model": self.model_id,
                "detector": self.settings.detector_setting,
                "database": self.engine.dialect.name,
            }


def private_files() -> None:
    """Files this process creates are 0600 and directories 0700 (database, write-ahead log,
    keys, anchors, index files, uploads): the umask only ever gets stricter."""
    current = os.umask(0o077)
    os.umask(current | 0o077)


def load_audit_key(settings: Settings, engine) -> bytes:
    """The audit MAC key (environment, else its file). Missing: ``key_missing`` when the log
    holds MAC'd records, else 'run init' (which creates it)."""
    if settings.audit_key:
        return parse_key(settings.audit_key.get_secret_value())
    path = settings.resolved_audit_key_file
    if path.is_file():
        return read_key_file(path)
    with db.session_factory(engine)() as session:
        macd = session.scalar(select(AuditEvent.seq).where(AuditEvent.chain == 2).limit(1))
    if macd is not None:
        raise KeyMissing(
            f"audit key file {path} not found, and the audit log is MAC'd under it: restore it "
            "from its backup (or set FACEWARDEN_AUDIT_KEY / FACEWARDEN_AUDIT_KEY_FILE)"
        )
    raise NotInitialised(f"audit key file {path} not found: run 'facewarden init'")


def prepare_audit_key(settings: Settings, engine) -> None:
    if settings.audit_key or settings.resolved_audit_key_file.exists():
        return
    try:
        load_audit_key(settings, engine)
    except KeyMissing:
        raise  # MAC'd records need the lost key: never replace it
    except NotInitialised:
        pass
    create_key_file(settings.resolved_audit_key_file)


def check_production(settings: Settings) -> None:
    """Production mode refuses to run without the controller's identity and contacts."""
    if not settings.production:
        return
    missing = [
        f"FACEWARDEN_{name.upper()}"
        for name in ("controller_name", "controller_contact", "dpo_contact")
        if not getattr(settings, name).strip()
    ]
    if missing:
        raise ConfigurationError(
            "production mode needs the controller fields of the public notice: set "
            + ", ".join(missing)
        )


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def build_pipeline(settings: Settings, threads: int | None = None) -> FacePipeline:
    """The configured pipeline; ``threads``: ONNX Runtime threads (default: the setting)."""
    from facewarden.adapters.models.registry import build_aligner, build_detector, build_embedder

    threads = settings.model_threads if threads is None else threads
    runtime, model_dir = settings.runtime, settings.model_dir
    return FacePipeline(
        build_detector(
            settings.detector,
            settings.upsample,
            runtime,
            model_dir,
            threads,
            retry=settings.detector_retry,
        ),
        build_aligner(),
        build_embedder(runtime, model_dir, threads),
        min_face_size=settings.min_face_size,
        keep_chips=settings.store_crops,
        flip=settings.descriptor_flip,
        detect_max_pixels=settings.detect_max_pixels,
        max_faces=settings.max_image_faces,
    )
