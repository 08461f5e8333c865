"""Backup and restore of a SQLite installation.

``backup`` writes a consistent snapshot while the server runs: SQLite's online backup API
copies the database page by page under its own read transaction, so an ingest or a search
committing meanwhile is either wholly in the copy or not at all. The vector index is not
copied (it is derived: the restored installation rebuilds it from the database on first use).
The template key is copied only when asked (``with_key``): a backup holding the key and the
templates is as sensitive as the installation itself.

``restore`` checks a backup before using it: the file's checksum, the audit chain up to the
head recorded at backup time, the counts, and that the key at hand is the key the templates
were encrypted with (one template is decrypted). Only then is the database moved into place.

PostgreSQL installations are backed up with PostgreSQL's own tools (``pg_dump -Fc``, or a
base backup with WAL archiving), which give the same consistency; see
docs/limits-and-operations.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from facewarden import __version__
from facewarden.adapters.crypto import KeyMissing, WrongKey
from facewarden.adapters.storage.tables import Face, Media
from facewarden.config import Settings
from facewarden.core.actors import Actor
from facewarden.core.binding import template_aad
from facewarden.core.clock import utcnow
from facewarden.core.errors import InvalidInput, Refused
from facewarden.services.access import RoleGuard
from facewarden.services.audit import AuditLog
from facewarden.services.keyring import Keyring
from facewarden.services.stores import Stores, open_stores

MANIFEST = "manifest.json"
DATABASE = "facewarden.db"
KEY = "template.key"
AUDIT_KEY = "audit.key"
ANCHORS = "audit-anchors.log"
COUNTED = ("media", "faces", "audit_events", "cases", "sources", "users")
PG_HINT = (
    "backup and restore cover SQLite installations; back up PostgreSQL with its own tools "
    "(pg_dump -Fc, or a base backup with WAL archiving) and keep the template key apart"
)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _snapshot_facts(path: Path) -> dict[str, Any]:
    """Counts, audit head, key ids and schema revision of a database file."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in COUNTED}
        head = conn.execute("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
        seq, digest = head.fetchone() or (0, None)
        key_ids = sorted(k for (k,) in conn.execute("SELECT DISTINCT key_id FROM faces"))
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    finally:
        conn.close()
    return {
        "counts": counts,
        "audit_head": {"seq": seq, "hash": digest},
        "key_ids": key_ids,
        "schema": revision,
    }


class BackupService:
    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        keyring: Keyring,
        audit: AuditLog,
        guard: RoleGuard,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.keyring = keyring
        self.audit = audit
        self.guard = guard

    def backup(self, actor: Actor, dest: Path, *, with_key: bool = False) -> dict[str, Any]:
        """Write a consistent snapshot into the new or empty folder ``dest``."""
        self.guard.authorize(
            actor, "backup", "admin", details={"dest": str(dest), "with_key": with_key}
        )
        if self.engine.dialect.name != "sqlite":
            raise InvalidInput(PG_HINT)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise InvalidInput(f"{dest} exists and is not an empty folder")
        source = Path(str(self.engine.url.database))
        created = not dest.exists()
        dest.mkdir(parents=True, exist_ok=True)
        dest.chmod(0o700)
        part = dest / (DATABASE + ".part")
        try:
            # The anchors first: every anchor copied names a record the snapshot holds.
            anchors = self.settings.resolved_anchor_file
            if anchors.is_file():
                shutil.copyfile(anchors, dest / ANCHORS)
                os.chmod(dest / ANCHORS, 0o600)
            src = sqlite3.connect(source, timeout=60)
            out = sqlite3.connect(part)
            try:
                src.backup(out, pages=1024)
            finally:
                out.close()
                src.close()
            os.chmod(part, 0o600)
            facts = _snapshot_facts(part)
            os.replace(part, dest / DATABASE)
            manifest = {
                "format": 1,
                "facewarden": __version__,
                "created_at": utcnow().isoformat(),
                "database_sha256": _sha256(dest / DATABASE),
                "key_id": self.keyring.cipher.key_id,
                "key_included": with_key,
            } | facts
            if with_key:  # the template key and the audit MAC key
                settings = self.settings
                for name, secret, path in (
                    (KEY, settings.template_key, settings.resolved_key_file),
                    (AUDIT_KEY, settings.audit_key, settings.resolved_audit_key_file),
                ):
                    if not secret and not path.is_file():
                        continue
                    text = secret.get_secret_value() if secret else path.read_text()
                    fd = os.open(dest / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "w") as fh:
                        fh.write(text.strip() + "\n")
            (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        except BaseException:
            for leftover in (
                part,
                dest / DATABASE,
                dest / KEY,
                dest / AUDIT_KEY,
                dest / ANCHORS,
                dest / MANIFEST,
            ):
                leftover.unlink(missing_ok=True)
            if created:
                shutil.rmtree(dest, ignore_errors=True)
            raise
        self.audit.record(
            actor,
            "backup",
            details={
                "dest": str(dest),
                "with_key": with_key,
                "counts": manifest["counts"],
                "audit_head": manifest["audit_head"],
            },
        )
        return manifest


def restore(settings: Settings, src: Path, *, force: bool = False) -> dict[str, Any]:
    """Check the backup in ``src`` and install it as the database of ``settings.data_dir``.

    Refused (nothing changed) when the manifest, checksum, audit chain, counts or key do not
    match, or when the data directory already holds a database (``force`` replaces it)."""
    if settings.database_url and not settings.database_url.startswith("sqlite"):
        raise InvalidInput(PG_HINT)
    try:
        manifest = json.loads((src / MANIFEST).read_text())
        expected_sha = manifest["database_sha256"]
    except (OSError, ValueError, KeyError) as exc:
        raise InvalidInput(f"{src} is not a facewarden backup (no readable {MANIFEST})") from exc
    db_file = src / DATABASE
    if not db_file.is_file() or _sha256(db_file) != expected_sha:
        raise Refused(
            "the backup's database does not match its checksum: refused", code="backup_corrupt"
        )
    data_dir = settings.data_dir
    target = Path(settings.resolved_database_url.removeprefix("sqlite:///"))
    if target.exists() and not force:
        raise InvalidInput(
            f"{target} already exists: restore into an empty data directory (or --force)"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    key_file = settings.resolved_key_file
    copied: list[Path] = []
    for name, secret, path, env in (
        (KEY, settings.template_key, key_file, "FACEWARDEN_TEMPLATE_KEY"),
        (AUDIT_KEY, settings.audit_key, settings.resolved_audit_key_file, "FACEWARDEN_AUDIT_KEY"),
    ):
        if secret or path.exists():
            continue
        if not (src / name).exists():
            for done in copied:
                done.unlink(missing_ok=True)
            raise InvalidInput(
                f"the {name} file is not in the backup: put it at {path} or set {env}"
            )
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copyfile(src / name, path)
        path.chmod(0o600)
        copied.append(path)
    anchors = settings.resolved_anchor_file
    if (src / ANCHORS).is_file() and not anchors.exists():
        shutil.copyfile(src / ANCHORS, anchors)
        anchors.chmod(0o600)
        copied.append(anchors)
    staged = target.with_name(target.name + ".restoring")
    try:
        shutil.copyfile(db_file, staged)
        staged.chmod(0o600)
        check = settings.model_copy(update={"database_url": f"sqlite:///{staged}"})
        try:
            fw = open_stores(check)
        except (KeyMissing, WrongKey) as exc:
            raise Refused(
                f"backup refused: the key at hand is not the key of the backup ({exc.message})",
                code="backup_invalid",
            ) from None
        try:
            problem = _check(fw, manifest, template_aad)
        finally:
            fw.engine.dispose()
        if problem:
            raise Refused(f"backup refused: {problem}", code="backup_invalid")
        for stale in (
            target.with_name(target.name + "-wal"),
            target.with_name(target.name + "-shm"),
        ):
            stale.unlink(missing_ok=True)
        os.replace(staged, target)
    except BaseException:
        staged.unlink(missing_ok=True)
        for stale in (
            staged.with_name(staged.name + "-wal"),
            staged.with_name(staged.name + "-shm"),
        ):
            stale.unlink(missing_ok=True)
        for done in copied:
            done.unlink(missing_ok=True)
        raise
    shutil.rmtree(data_dir / "index", ignore_errors=True)  # derived: rebuilt on first use
    fw = open_stores(settings)
    try:
        fw.audit.record(
            "facewarden restore",
            "restore",
            details={"from": str(src), "created_at": manifest.get("created_at"),
                     "counts": manifest["counts"], "audit_head": manifest["audit_head"]},
        )  # fmt: skip
    finally:
        fw.engine.dispose()
    return {"restored": str(target), "checked": True} | {
        k: manifest[k] for k in ("created_at", "counts", "audit_head", "key_id")
    }


def _check(fw: Stores, manifest: dict[str, Any], template_aad) -> str | None:
    """Why the staged copy must not be used, or None."""
    head = manifest["audit_head"]
    anchors = [head] if head["seq"] else None
    report = fw.audit.verify(anchors)
    if not report.ok:
        return f"audit chain broken at record {report.first_bad_seq}: {report.reason}"
    facts = _snapshot_facts(Path(str(fw.engine.url.database)))
    if facts["counts"] != manifest["counts"]:
        return f"counts {facts['counts']} differ from the manifest's {manifest['counts']}"
    if fw.cipher.key_id != manifest["key_id"] or any(
        k != fw.cipher.key_id for k in facts["key_ids"]
    ):
        return (
            f"the key at hand (id {fw.cipher.key_id}) is not the key of the backup "
            f"(id {manifest['key_id']})"
        )
    with fw.sessions() as session:
        row = session.execute(
            select(Face.template, Face.key_id, Face.face_index, Media.sha256).join(Media).limit(1)
        ).first()
    if row is not None:
        try:
            fw.cipher.decrypt_template(
                row.template, template_aad(row.sha256, row.face_index), row.key_id
            )
        except Exception:
            return "a template does not decrypt with the key at hand"
    return None
