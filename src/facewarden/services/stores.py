"""Opening a deployment's stores: the database (checked current), the template key (checked
against the data) and the audit log with its MAC key and anchors. The composition root
(``services.app``) and a backup restore's check open them the same way."""

from __future__ import annotations

import os
from dataclasses import dataclass

from sqlalchemy import Engine, inspect, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from facewarden.adapters.crypto import (
    KeyMissing,
    TemplateCipher,
    create_key_file,
    parse_key,
    read_key_file,
)
from facewarden.adapters.storage import db
from facewarden.adapters.storage.tables import AuditEvent
from facewarden.config import Settings
from facewarden.core.errors import ConfigurationError, NotInitialised
from facewarden.services.audit import AnchorFile, AuditLog
from facewarden.services.keys import check_keys, load_cipher


@dataclass
class Stores:
    engine: Engine
    single_reads: Engine
    """Connections that run one SELECT and nothing else (see ``db.single_read``)."""
    sessions: sessionmaker[Session]
    writes: sessionmaker[Session]
    """Sessions for read-modify-write transactions."""
    cipher: TemplateCipher
    audit: AuditLog


def open_stores(settings: Settings) -> Stores:
    """The stores of ``settings``' deployment; refuses a missing or outdated database, or a
    template key the data was not encrypted under."""
    check_production(settings)
    private_files()
    engine = db.make_engine(settings.resolved_database_url)
    try:
        current = inspect(engine).has_table("alembic_version") and db.is_current(engine)
    except OperationalError as exc:
        raise NotInitialised(
            f"cannot open database ({exc.orig}): run 'facewarden init' first "
            f"(data directory {settings.data_dir})"
        ) from exc
    if not current:
        raise NotInitialised(
            f"no facewarden database at {engine.url.render_as_string()}: "
            "run 'facewarden init' (or it needs migrating: 'facewarden init' upgrades it)"
        )
    sessions = db.session_factory(engine)
    writes = db.session_factory(engine, write=True)
    cipher = load_cipher(settings)
    check_keys(settings, engine, cipher)  # raises without every key the data needs
    if cipher is None:  # pragma: no cover - check_keys raised already
        raise NotInitialised("no template key")
    audit_key = load_audit_key(settings, engine)
    audit = AuditLog(
        sessions,
        writes,
        audit_key,
        AnchorFile(
            settings.resolved_anchor_file,
            audit_key,
            settings.audit_anchor_every,
            settings.audit_anchor_seconds,
        ),
    )
    return Stores(engine, db.single_read(engine), sessions, writes, cipher, audit)


def private_files() -> None:
    """Files this process creates are 0600 and directories 0700 (database, write-ahead log,
    keys, anchors, index files, uploads): the umask only ever gets stricter."""
    current = os.umask(0o077)
    os.umask(current | 0o077)


def load_audit_key(settings: Settings, engine: Engine) -> bytes:
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


def prepare_audit_key(settings: Settings, engine: Engine) -> None:
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
