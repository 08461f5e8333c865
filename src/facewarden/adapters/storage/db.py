"""Engine, sessions and migrations for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import CursorResult, Engine, Executable, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:  # Alembic loads only to migrate (0.17 s of every command otherwise)
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD_REVISION = "0008"
"""The newest migration (``tests/test_records_and_anchors.py`` checks that it is Alembic's
head): ``is_current`` compares the database with it without loading Alembic."""


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
            # Let SQLAlchemy/us control transactions; BEGIN IMMEDIATE takes the write lock.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA secure_delete=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            # Reads through a memory map of the file (no read() per page) and a 64 MB page
            # cache: a search re-checks a few dozen random rows of a gallery of millions.
            cur.execute("PRAGMA mmap_size=2147418112")
            cur.execute("PRAGMA cache_size=-65536")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn) -> None:  # pragma: no cover - trivial
            # Writers take the lock up front (no deadlock on upgrade); readers never block.
            options = conn.get_execution_options()
            if options.get("facewarden_single_read", False):
                return  # one SELECT is its own consistent snapshot: no BEGIN ... ROLLBACK
            immediate = options.get("facewarden_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def single_read(engine: Engine) -> Engine:
    """The engine for connections that run one SELECT and nothing else (a search's re-check):
    no transaction around it, one statement being its own snapshot. It saves the BEGIN and
    ROLLBACK of every such read (on PostgreSQL two round trips)."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(facewarden_single_read=True)
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine) -> None:
    from alembic import command

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def is_current(engine: Engine) -> bool:
    """Whether the database's schema is the newest (its ``alembic_version`` table exists)."""
    with engine.connect() as conn:
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return list(versions) == [HEAD_REVISION]


def session_factory(engine: Engine, *, write: bool = False) -> sessionmaker[Session]:
    """Sessions for reading, or (``write=True``) for read-modify-write transactions."""
    bind = engine.execution_options(facewarden_write=True) if write else engine
    return sessionmaker(bind, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


# Ingest writes and erasures exclude each other (PostgreSQL: an advisory lock; SQLite: the
# write lock BEGIN IMMEDIATE takes): an erasure waits for ingest transactions in flight, and an
# ingest transaction that starts after an erasure sees its suppression entry.
_ERASURE_LOCK_KEY = 0x66776572  # "fwer"


def erasure_lock(session: Session, *, shared: bool = False) -> None:
    """Hold the erasure lock for the rest of ``session``'s transaction (a write session):
    shared for an ingest write, exclusive for a deletion. On SQLite this starts the
    transaction now, so BEGIN IMMEDIATE takes the database's write lock."""
    if session.get_bind().dialect.name == "postgresql":
        fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        session.execute(text(f"SELECT {fn}(:k)"), {"k": _ERASURE_LOCK_KEY})
    else:
        session.execute(text("SELECT 1"))


def rowcount(session: Session, statement: Executable) -> int:
    """Rows an UPDATE or DELETE matched. ``Session.execute`` is typed as returning a plain
    ``Result``; such a statement's result is a ``CursorResult``, which has the count."""
    result = session.execute(statement)
    if not isinstance(result, CursorResult):
        raise TypeError(f"{type(result).__name__} of a statement that returns rows has no count")
    return result.rowcount


def purge_deleted_rows(engine: Engine) -> list[str]:
    """Physically drop deleted rows of the system of record; returns what was done.

    SQLite overwrites deleted content at once (``secure_delete``); the write-ahead log is
    checkpointed and truncated so no old page survives there. PostgreSQL VACUUMs the tables
    holding templates and crops (their contents are AES-GCM ciphertext in any case)."""
    if engine.dialect.name == "sqlite":
        raw = engine.raw_connection()  # outside any transaction (autocommit, see make_engine)
        try:
            busy = raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        finally:
            raw.close()
        if busy:
            return ["SQLite: secure_delete on; write-ahead log checkpoint deferred by a reader"]
        return ["SQLite: secure_delete on; write-ahead log checkpointed and truncated"]
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as con:
        con.exec_driver_sql("VACUUM faces, face_crops, media")
        return ["PostgreSQL: VACUUM faces, face_crops, media"]
