"""Backup while an ingest runs, restore elsewhere, identical searches; a tampered backup, a
corrupt one or the wrong key is refused before anything is installed."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time

import pytest
from sqlalchemy import func, select
from test_worker_lifecycle import varied_images
from webserver import facewarden_command

from facewarden.adapters.crypto import create_key_file
from facewarden.adapters.storage.tables import Face, Media
from facewarden.core.errors import InvalidInput, Refused
from facewarden.services.app import Facewarden
from facewarden.services.backup import _sha256, restore

from conftest import PROBES, add_source, make_settings, open_case


def searches(fw: Facewarden) -> list:
    actor = fw.actor(name="admin")
    out = []
    for probe in sorted(PROBES.glob("*.jpg")):
        result = fw.search.search(actor, probe.read_bytes(), case="CASE-1")
        out.append([[(c.face_id, c.distance, c.media_path) for c in f.candidates]
                    for f in result.faces])  # fmt: skip
    return out


@pytest.fixture
def sqlite_only(settings):
    if settings.database_url:
        pytest.skip("backup/restore cover SQLite; PostgreSQL uses pg_dump (tested below)")


@pytest.mark.slow  # an ingest of 40 photos in a CLI subprocess
def test_backup_during_ingest_restore_elsewhere_same_searches(
    sqlite_only, fw, admin, settings, tmp_path
):
    add_source(fw, admin)
    open_case(fw, admin, quota=1000)
    batch = varied_images(tmp_path / "batch", 40)
    token = fw.users.rotate(admin)  # the CLI acts by the admin's credential
    env = os.environ | {"FACEWARDEN_DATA_DIR": str(settings.data_dir), "FACEWARDEN_TOKEN": token}
    ingest = subprocess.Popen(
        [*facewarden_command(), "--as", "admin", "ingest", str(batch[0].parent), "--source",
         "press", "--workers", "1", "--json"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        while True:  # back up once part of the batch is stored
            with fw.sessions() as s:
                if s.scalar(select(func.count(Media.id))) >= 5:
                    break
            assert ingest.poll() is None, ingest.stderr.read()
            time.sleep(0.2)
        mid = fw.backups.backup(admin, tmp_path / "mid", with_key=True)
        assert ingest.poll() is None, "the ingest ended before the backup: not a live backup"
    finally:
        assert ingest.wait(600) == 0, ingest.stderr.read()
    assert 5 <= mid["counts"]["media"] < 40 + 0
    final = fw.backups.backup(admin, tmp_path / "final")
    assert not (tmp_path / "final" / "template.key").exists() and not final["key_included"]

    # The mid-ingest snapshot restores (key from the backup): chain intact, no half record.
    a = make_settings(tmp_path / "a", None)
    report = restore(a, tmp_path / "mid")
    assert report["counts"] == mid["counts"]
    fa = Facewarden(a, fw.pipeline)
    assert fa.audit.verify().ok
    with fa.sessions() as s:
        assert s.scalar(select(func.count(Media.id)).where(~Media.faces.any())) == 0
        assert s.scalar(select(func.count(Face.id))) == mid["counts"]["faces"]
    fa.close()

    # The final one, with the key put in place by hand: the same answers as the original.
    b = make_settings(tmp_path / "b", None)
    (tmp_path / "b").mkdir()
    for key in ("resolved_key_file", "resolved_audit_key_file"):
        shutil.copyfile(getattr(settings, key), getattr(b, key))
        os.chmod(getattr(b, key), 0o600)
    restore(b, tmp_path / "final")
    fb = Facewarden(b, fw.pipeline)
    fw_again = Facewarden(settings, fw.pipeline)
    assert searches(fb) == searches(fw_again)
    fb.close()
    fw_again.close()
    # Restoring over an existing database needs --force.
    with pytest.raises(InvalidInput, match="already exists"):
        restore(b, tmp_path / "final")


def test_tampered_corrupt_or_foreign_key_backups_are_refused(
    sqlite_only, gallery_fw, admin, tmp_path
):
    fw = gallery_fw
    fw.backups.backup(admin, tmp_path / "good", with_key=True)

    # An insider edits an audit record and fixes the checksum: the chain gives it away.
    shutil.copytree(tmp_path / "good", tmp_path / "edited")
    db = tmp_path / "edited" / "facewarden.db"
    conn = sqlite3.connect(db)
    conn.execute("UPDATE audit_events SET actor = 'nobody' WHERE seq = 2")
    conn.commit()
    conn.close()
    manifest = json.loads((tmp_path / "edited" / "manifest.json").read_text())
    manifest["database_sha256"] = _sha256(db)
    (tmp_path / "edited" / "manifest.json").write_text(json.dumps(manifest))
    target = make_settings(tmp_path / "t1", None)
    with pytest.raises(Refused) as err:
        restore(target, tmp_path / "edited")
    assert err.value.code == "backup_invalid" and "audit chain" in err.value.message
    assert not (tmp_path / "t1" / "facewarden.db").exists()
    assert not (tmp_path / "t1" / "template.key").exists()

    # A flipped byte without a new checksum.
    shutil.copytree(tmp_path / "good", tmp_path / "flipped")
    data = bytearray((tmp_path / "flipped" / "facewarden.db").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "flipped" / "facewarden.db").write_bytes(bytes(data))
    with pytest.raises(Refused) as err:
        restore(make_settings(tmp_path / "t2", None), tmp_path / "flipped")
    assert err.value.code == "backup_corrupt"

    # Another installation's key.
    other = make_settings(tmp_path / "t3", None)
    create_key_file(other.resolved_key_file)
    with pytest.raises(Refused, match="not the key of the backup"):
        restore(other, tmp_path / "good")
    assert not (tmp_path / "t3" / "facewarden.db").exists()


def test_postgresql_backup_points_to_its_tools(fw, admin, settings, tmp_path):
    if not settings.database_url:
        pytest.skip("PostgreSQL only")
    with pytest.raises(InvalidInput, match="pg_dump"):
        fw.backups.backup(admin, tmp_path / "b")
