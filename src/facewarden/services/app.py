"""The composition root: builds the object graph every interface (CLI, HTTP, UI, Python)
goes through. Each service receives what it needs through its constructor; none imports
this module (an import-linter contract keeps it so)."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from facewarden.adapters.crypto import TemplateCipher, create_key_file
from facewarden.adapters.index.base import FaceLabel, VectorIndex
from facewarden.adapters.reports import JinjaReports
from facewarden.adapters.storage import db
from facewarden.adapters.storage.tables import AuditEvent, Face, Media, Source, User
from facewarden.config import Settings
from facewarden.core.actors import SINGLE_OPERATOR_ROLES, Actor
from facewarden.core.binding import crop_aad, template_aad  # noqa: F401 (re-exported)
from facewarden.core.clock import utcnow
from facewarden.core.errors import NotFound, Unauthenticated
from facewarden.core.pipeline import FacePipeline
from facewarden.services.access import RoleGuard
from facewarden.services.backup import BackupService
from facewarden.services.cases import CaseService
from facewarden.services.confirmations import ConfirmationService
from facewarden.services.gallery import GalleryService
from facewarden.services.index import IndexService
from facewarden.services.ingest import IngestService
from facewarden.services.keyring import Keyring
from facewarden.services.keys import KeyService, prepare_init
from facewarden.services.models import Models
from facewarden.services.oversight import OversightService
from facewarden.services.probes import Probe, ProbePool
from facewarden.services.records import RecordsService
from facewarden.services.redaction import RedactionService
from facewarden.services.review import ReviewService
from facewarden.services.search import SearchService, searchable_faces
from facewarden.services.sources import SourceService
from facewarden.services.stores import (  # noqa: F401 (re-exported)
    check_production,
    load_audit_key,
    open_stores,
    prepare_audit_key,
    private_files,
)
from facewarden.services.subject_records import SubjectRecordService
from facewarden.services.subjects import SubjectService
from facewarden.services.suppression import SuppressionList
from facewarden.services.users import UserService
from facewarden.services.video import VideoSearchService


class Facewarden:
    """Owns the database, the key, the index and the models, and builds the services on them.

    The methods below the services are a facade for the interfaces, scripts and tests: each
    hands over to the service that owns the piece (``index_service``, ``models``, ``keyring``,
    ``guard``)."""

    def __init__(self, settings: Settings, pipeline: FacePipeline | None = None) -> None:
        self.settings = settings
        stores = open_stores(settings)
        self.engine = stores.engine
        self.single_reads = stores.single_reads
        self.sessions = stores.sessions
        self.writes = stores.writes
        self.audit = stores.audit
        self.keyring = Keyring(stores.cipher)
        self.guard = RoleGuard(self.audit)
        self.models = Models(settings, pipeline)
        self.index_service = IndexService(
            settings, self.engine, self.sessions, self.keyring, self.models, self.audit, self.guard
        )
        index = self.index_service
        self.suppression = SuppressionList(settings, self.sessions, self.keyring)
        self.keys = KeyService(
            settings=settings,
            writes=self.writes,
            keyring=self.keyring,
            index=index,
            sessions=self.sessions,
            audit=self.audit,
            guard=self.guard,
        )
        self.sources = SourceService(
            writes=self.writes, sessions=self.sessions, audit=self.audit, guard=self.guard
        )
        self.cases = CaseService(
            settings=settings,
            writes=self.writes,
            sessions=self.sessions,
            audit=self.audit,
            guard=self.guard,
        )
        self.confirmations = ConfirmationService(
            writes=self.writes,
            cases=self.cases,
            sessions=self.sessions,
            audit=self.audit,
            guard=self.guard,
        )
        self.gallery = GalleryService(
            settings=settings,
            engine=self.engine,
            writes=self.writes,
            keyring=self.keyring,
            models=self.models,
            index=index,
            sources=self.sources,
            cases=self.cases,
            sessions=self.sessions,
            audit=self.audit,
            guard=self.guard,
        )
        self.search = SearchService(
            settings=settings,
            writes=self.writes,
            single_reads=self.single_reads,
            keyring=self.keyring,
            models=self.models,
            index=index,
            keys=self.keys,
            cases=self.cases,
            suppression=self.suppression,
            sessions=self.sessions,
            audit=self.audit,
            guard=self.guard,
        )
        reports = JinjaReports()
        self.subjects = SubjectService(
            settings=settings,
            writes=self.writes,
            keyring=self.keyring,
            models=self.models,
            keys=self.keys,
            index=index,
            gallery=self.gallery,
            search=self.search,
            reports=reports,
            sessions=self.sessions,
            audit=self.audit,
            guard=self.guard,
        )
        self.subject_records = SubjectRecordService(
            settings=settings,
            writes=self.writes,
            keyring=self.keyring,
            models=self.models,
            keys=self.keys,
            index=index,
            gallery=self.gallery,
            subjects=self.subjects,
            sessions=self.sessions,
            audit=self.audit,
            guard=self.guard,
        )
        self.ingest = IngestService(
            settings=settings,
            writes=self.writes,
            models=self.models,
            index=index,
            keys=self.keys,
            sources=self.sources,
            suppression=self.suppression,
            sessions=self.sessions,
            audit=self.audit,
            guard=self.guard,
        )
        self.video = VideoSearchService(
            settings=settings,
            audit=self.audit,
            guard=self.guard,
            models=self.models,
            search_service=self.search,
            cases=self.cases,
        )
        self.redaction = RedactionService(
            settings=settings,
            keyring=self.keyring,
            models=self.models,
            cases=self.cases,
            sessions=self.sessions,
            audit=self.audit,
            guard=self.guard,
        )
        self.users = UserService(
            settings=settings,
            writes=self.writes,
            sessions=self.sessions,
            audit=self.audit,
            guard=self.guard,
        )
        self.review = ReviewService(
            keyring=self.keyring,
            cases=self.cases,
            sessions=self.sessions,
            audit=self.audit,
            guard=self.guard,
        )
        self.records = RecordsService(
            settings=settings,
            models=self.models,
            sources=self.sources,
            cases=self.cases,
            confirmations=self.confirmations,
            subjects=self.subjects,
            reports=reports,
            sessions=self.sessions,
            audit=self.audit,
            guard=self.guard,
        )
        self.oversight = OversightService(audit=self.audit, guard=self.guard)
        self.backups = BackupService(
            settings=settings,
            engine=self.engine,
            keyring=self.keyring,
            audit=self.audit,
            guard=self.guard,
        )

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

    def close(self) -> None:
        self.models.close()
        self.index_service.close()
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

    def authorize(self, actor: Actor, action: str, *roles: str, **audit_fields: object) -> None:
        """Refuse (and log the refusal) unless the actor holds one of ``roles``."""
        self.guard.authorize(actor, action, *roles, **audit_fields)

    # -- the facade: keys, models and index ----------------------------------------------
    @property
    def cipher(self) -> TemplateCipher:
        """The template cipher in use (a key rotation replaces it in the keyring)."""
        return self.keyring.cipher

    @cipher.setter
    def cipher(self, cipher: TemplateCipher) -> None:
        self.keyring.cipher = cipher

    @property
    def pipeline(self) -> FacePipeline:
        return self.models.pipeline

    @property
    def _pipeline(self) -> FacePipeline | None:
        """The pipeline if one was given or built already (the server hands it to its probe
        workers rather than build another)."""
        return self.models._pipeline

    @property
    def model_id(self) -> str:
        return self.models.model_id

    @property
    def probes(self) -> ProbePool | None:
        """The server's probe workers (``serve`` sets them); None: probes in process."""
        return self.models.probes

    @probes.setter
    def probes(self, pool: ProbePool | None) -> None:
        self.models.probes = pool

    def analyse_probe(self, data: bytes) -> Probe:
        return self.models.analyse_probe(data)

    def check_template_space(self) -> None:
        self.index_service.check_template_space()

    @property
    def index(self) -> VectorIndex:
        """The vector index, reconciled with the database once per process on first use."""
        return self.index_service.vectors

    @property
    def _index(self) -> VectorIndex:
        """The vector index as opened, not reconciled (tests and benchmarks look inside)."""
        return self.index_service._index

    def open_index(self, backend: str | None = None) -> VectorIndex:
        return self.index_service.open(backend)

    def save_index(self) -> bool:
        return self.index_service.save()

    def sync_index(self) -> dict[str, int]:
        return self.index_service.sync()

    def catch_up_index(self) -> int:
        return self.index_service.catch_up()

    def rekey_index(self, template_key: bytes) -> int:
        return self.index_service.rekey(template_key)

    def rebuild_index(self) -> int:
        return self.index_service.refill()

    def load_templates(self, face_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        return self.index_service.load_templates(face_ids)

    def labelled_templates(
        self, face_ids: list[int]
    ) -> tuple[np.ndarray, np.ndarray, list[FaceLabel]]:
        return self.index_service.labelled_templates(face_ids)

    def gallery_size(self, session: Session) -> int:
        return searchable_faces(session)

    def stats(self) -> dict[str, object]:
        index_size = len(self.index)
        with self.sessions() as session:
            return {
                "sources": session.scalar(select(func.count(Source.id))),
                "media": session.scalar(select(func.count(Media.id))),
                "faces": session.scalar(select(func.count(Face.id))),
                "searchable_faces": searchable_faces(session),
                "index_size": index_size,
                "index_backend": self._index.name,
                "model": self.model_id,
                "detector": self.settings.detector_setting,
                "database": self.engine.dialect.name,
            }


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
