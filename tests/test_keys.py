"""Key management fails safe: key ids checked on every decryption, no second key made while
data needs the first, a resumable key rotation, keys outside the data directory, private
file modes."""

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, select, text

from facewarden.adapters.crypto import (
    KeyMissing,
    TemplateCipher,
    key_id_of,
    read_key_file,
    retiring_key_path,
    write_key_file,
)
from facewarden.adapters.storage.tables import EncryptionKey, Face, FaceCrop
from facewarden.services.app import Facewarden

from conftest import (
    GALLERY,
    PROBES,
    REFERENCE,
    add_source,
    make_settings,
    open_case,
    probe,
    run_batch,
)


def cli_env(data_dir: Path, database_url: str | None, **extra: str) -> dict[str, str]:
    env = os.environ | {
        "FACEWARDEN_DATA_DIR": str(data_dir),
        "FACEWARDEN_WORKERS": "1",
        "COLUMNS": "250",
        # init's token file for this data directory, kept beside it
        "XDG_CONFIG_HOME": str(data_dir.parent / "config"),
    }
    env.pop("FACEWARDEN_TOKEN", None)
    env |= extra
    if database_url:
        env["FACEWARDEN_DATABASE_URL"] = database_url
    else:
        env.pop("FACEWARDEN_DATABASE_URL", None)
    return env


def run(env: dict[str, str], *args, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "facewarden", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if ok:
        assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc


def refused(proc: subprocess.CompletedProcess, code: str, needed: str) -> None:
    """A clear error (no traceback) with the stable code, naming the key id the data needs."""
    assert proc.returncode == 1, proc.stderr + proc.stdout
    assert f"error [{code}]" in proc.stderr, proc.stderr
    assert needed in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def face_key_ids(database_url: str | None, data_dir: Path) -> list[str]:
    url = database_url or f"sqlite:///{data_dir / 'facewarden.db'}"
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            faces = conn.execute(text("SELECT key_id FROM faces")).scalars().all()
            crops = conn.execute(text("SELECT key_id FROM face_crops")).scalars().all()
            return [*faces, *crops]
    finally:
        engine.dispose()


SOURCE = [
    "source",
    "add",
    "press",
    "--lawful-basis",
    "Art.6(1)(e)",
    "--purpose",
    "suspects",
    "--jurisdiction",
    "fr",
    "--retention",
    "365d",
]


@pytest.mark.slow  # 15 CLI runs in subprocesses
def test_key_loss_sequence_ends_in_a_clear_error(tmp_path, database_url):
    """The issue's sequence: key file removed, init, ingest, key restored. Init refuses to
    make a second key, every command names the key id the data needs, nothing is committed
    under another key, and with the key restored everything works."""
    data = tmp_path / "data"
    env = cli_env(data, database_url)
    run(env, "init")
    run(env, *SOURCE)
    run(env, "ingest", GALLERY / "obama.jpg", "--source", "press")
    key_file = data / "template.key"
    saved = key_file.read_bytes()
    needed = key_id_of(read_key_file(key_file))

    # init in a process of its own; the other commands one after the other in one process
    # (through the CLI's entry point: conftest.run_batch).
    others = [("ingest", GALLERY / "biden.jpg", "--source", "press"), ("stats",)]
    key_file.unlink()
    refused(run(env, "init", ok=False), "key_missing", needed)
    assert not key_file.exists(), "init made a new key while data needs the old one"
    for proc in run_batch(env, [*others, ("index", "rebuild")]):
        refused(proc, "key_missing", needed)
    assert not key_file.exists()

    # Another key in its place: refused as the wrong key, naming the one needed.
    write_key_file(key_file, os.urandom(32))
    refused(run(env, "init", ok=False), "wrong_key", needed)
    for proc in run_batch(env, others):
        refused(proc, "wrong_key", needed)
    assert set(face_key_ids(database_url, data)) == {needed}

    key_file.unlink()
    write_key_file(key_file, read_key_file_bytes(saved))
    run(env, "stats")
    run(env, "index", "rebuild")
    run(env, "ingest", GALLERY / "biden.jpg", "--source", "press")
    assert set(face_key_ids(database_url, data)) == {needed}
    assert len(face_key_ids(database_url, data)) == 4  # two faces, two crops


def read_key_file_bytes(saved: bytes) -> bytes:
    import base64

    return base64.b64decode(saved.strip())


def test_every_decryption_checks_the_key_id(gallery_fw, admin):
    """A row naming a key this process does not hold stops with key_missing and the id."""
    foreign = "0123456789abcdef"
    with gallery_fw.engine.begin() as conn:
        conn.execute(text("UPDATE faces SET key_id = :k WHERE id = 1"), {"k": foreign})
        conn.execute(text("UPDATE face_crops SET key_id = :k WHERE face_id = 2"), {"k": foreign})
    with pytest.raises(KeyMissing, match=foreign):
        gallery_fw.load_templates([1])
    with pytest.raises(KeyMissing, match=foreign):
        gallery_fw.gallery.crop(admin, 2)
    gallery_fw.load_templates([2, 3])  # the others still read


def test_init_replaces_a_lost_key_only_when_nothing_is_encrypted(settings, pipeline):
    app, _ = Facewarden.init(settings, pipeline=pipeline)
    first = app.cipher.key_id
    app.engine.dispose()
    settings.resolved_key_file.unlink()
    with pytest.raises(KeyMissing, match=first):
        Facewarden(settings, pipeline)
    app, _ = Facewarden.init(settings, pipeline=pipeline)  # nothing sealed: a new key is fine
    assert app.cipher.key_id != first
    with app.sessions() as s:
        assert s.scalars(select(EncryptionKey.key_id)).all() == [app.cipher.key_id]
    app.engine.dispose()


@pytest.mark.slow  # a rotation in a subprocess, killed, then run again
def test_key_rotate_killed_halfway_and_rerun(gallery_fw, admin, settings, database_url):
    """SIGKILL after the first re-encrypted batch, then a re-run: every template, crop and kept
    probe reads under the new key, the old key file is gone, the rotation is logged."""
    fw = gallery_fw
    fw.ingest.run(admin, [PROBES, REFERENCE], "press")
    open_case(fw, admin, "KEEP", keep_probe_templates=True)
    fw.search.search(admin, probe("obama1.jpg"), case="KEEP")
    old_id, old_key = fw.cipher.key_id, fw.cipher.key
    with fw.sessions() as s:
        faces = s.scalars(select(Face.id).order_by(Face.id)).all()
    assert len(faces) >= 12
    _, before = fw.load_templates(faces)
    token = fw.users.rotate(admin)  # the CLI acts by the admin's credential
    fw.close()

    env = cli_env(
        settings.data_dir, database_url, FACEWARDEN_KEY_ROTATE_BATCH="1", FACEWARDEN_TOKEN=token
    )
    child = subprocess.Popen(
        [sys.executable, "-m", "facewarden", "key", "rotate"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert child.stdout is not None
    for line in child.stdout:
        if line.startswith("re-encrypted 1 faces"):
            child.send_signal(signal.SIGKILL)
            break
    child.wait()
    assert child.returncode == -signal.SIGKILL
    key_file = settings.resolved_key_file
    new_id = key_id_of(read_key_file(key_file))
    assert new_id != old_id
    assert retiring_key_path(key_file).is_file()  # the old key is kept until the end
    ids = face_key_ids(database_url, settings.data_dir)
    assert new_id in ids and old_id in ids, "the kill did not land halfway"

    # Halfway, every command still reads (both keys held); a re-run finishes.
    run(env, "stats")
    done = run(env, "key", "rotate")
    assert "resuming rotation" in done.stdout and "index rebuilt" in done.stdout
    assert not retiring_key_path(key_file).exists()
    assert set(face_key_ids(database_url, settings.data_dir)) == {new_id}

    app = Facewarden(settings, fw.pipeline)
    assert app.cipher.key_id == new_id and app.cipher.held_key_ids == {new_id}
    _, after = app.load_templates(faces)
    assert np.array_equal(before, after)
    assert app.gallery.crop(admin, faces[0])[:2] == b"\xff\xd8"  # a JPEG again
    from facewarden.adapters.storage.tables import CaseSearch

    with app.sessions() as s:
        kept = s.scalars(
            select(CaseSearch.key_id).where(CaseSearch.probe_templates.is_not(None))
        ).all()
        states = dict(s.execute(select(EncryptionKey.key_id, EncryptionKey.state)).all())
        template = s.scalar(select(Face.template).where(Face.id == faces[0]))
        assert s.scalar(select(FaceCrop.key_id).where(FaceCrop.face_id == faces[0])) == new_id
    assert kept == [new_id]
    assert states == {old_id: "retired", new_id: "current"}
    # The old key no longer opens anything: the data names the new key.
    with pytest.raises(KeyMissing, match=new_id):
        TemplateCipher(old_key).decrypt(template, b"any", new_id)
    result = app.search.search(admin, probe("obama1.jpg"), case="CASE-1")
    assert result.faces[0].candidates
    rotations = [e["outcome"] for e in app.audit.events(action="key.rotate")]
    assert rotations == ["started", "ok"]
    assert app.audit.verify().ok
    app.engine.dispose()


def test_key_and_audit_files_outside_the_data_directory_and_private_modes(tmp_path, database_url):
    """Keys on another path (a setting), and everything created 0600 / 0700."""
    data, keys, anchors = tmp_path / "data", tmp_path / "keys", tmp_path / "anchors"
    env = cli_env(
        data,
        database_url,
        FACEWARDEN_KEY_FILE=str(keys / "template.key"),
        FACEWARDEN_AUDIT_KEY_FILE=str(keys / "audit.key"),
        FACEWARDEN_AUDIT_ANCHOR_FILE=str(anchors / "anchors.log"),
    )
    os.umask(0o022)  # the usual default: facewarden must not rely on a strict one
    run(env, "init")
    run(env, *SOURCE)
    run(env, "ingest", GALLERY / "obama.jpg", "--source", "press")
    assert not (data / "template.key").exists() and not (data / "audit.key").exists()
    for f in (keys / "template.key", keys / "audit.key", anchors / "anchors.log"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    wrong = []
    for path in [data, *data.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode != (0o700 if path.is_dir() else 0o600):
            wrong.append(f"{path.relative_to(tmp_path)} {oct(mode)}")
    assert not wrong, wrong
    assert database_url or (data / "facewarden.db").is_file()


@pytest.mark.skipif(bool(os.environ.get("FACEWARDEN_TEST_PG_URL")), reason="SQLite files")
def test_sqlite_write_ahead_log_is_private(tmp_path, pipeline):
    os.umask(0o022)
    settings = make_settings(tmp_path / "data", None)
    app, _ = Facewarden.init(settings, pipeline=pipeline)
    admin = app.actor(name="admin")
    add_source(app, admin)
    with app.engine.connect() as conn:  # held open: the WAL and shared memory stay
        conn.exec_driver_sql("SELECT count(*) FROM faces")
        files = sorted(settings.data_dir.glob("facewarden.db*"))
        assert {f.name for f in files} >= {
            "facewarden.db",
            "facewarden.db-wal",
            "facewarden.db-shm",
        }
        for f in files:
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    app.engine.dispose()


def test_a_running_process_follows_a_rotation_done_by_another(
    gallery_fw, admin, settings, database_url
):
    """A server started before `key rotate` reads the re-encrypted data (it reloads the key
    files for a key id it does not hold) and writes under the new key, never the old one."""
    fw = gallery_fw
    old_id = fw.cipher.key_id
    token = fw.users.rotate(admin)
    run(cli_env(settings.data_dir, database_url, FACEWARDEN_TOKEN=token), "key", "rotate")
    new_id = key_id_of(read_key_file(settings.resolved_key_file))
    ids, vecs = fw.load_templates([1, 2])
    assert len(ids) == 2 and vecs.shape == (2, 128)
    fw.ingest.run(admin, [PROBES / "obama1.jpg"], "press")
    assert set(face_key_ids(database_url, settings.data_dir)) == {new_id}
    assert fw.cipher.key_id == new_id != old_id


def test_rotation_refuses_a_key_from_the_environment(tmp_path, database_url, pipeline):
    from facewarden.core.errors import Refused

    settings = make_settings(tmp_path / "d", database_url, template_key="cd" * 32)
    app, _ = Facewarden.init(settings, pipeline=pipeline)
    with pytest.raises(Refused, match="FACEWARDEN_TEMPLATE_KEY"):
        app.keys.rotate(app.actor(name="admin"))
    app.engine.dispose()


def test_init_makes_an_earlier_installation_private(tmp_path, database_url, pipeline):
    """Directories and database files an earlier version left 0755/0644 are tightened."""
    settings = make_settings(tmp_path / "data", database_url)
    app, _ = Facewarden.init(settings, pipeline=pipeline)
    app.engine.dispose()
    old = settings.data_dir / "index" / "faiss"
    old.mkdir(parents=True, exist_ok=True)
    for path in (settings.data_dir, old.parent, old):
        path.chmod(0o755)
    database = settings.data_dir / "facewarden.db"
    if database.exists():
        database.chmod(0o644)
    app, _ = Facewarden.init(settings, pipeline=pipeline)
    app.engine.dispose()
    for path in (settings.data_dir, old.parent, old):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    if database.exists():
        assert stat.S_IMODE(database.stat().st_mode) == 0o600


def test_rotation_stopped_before_and_after_its_transactions_resumes(fw, admin, settings):
    """Stopped after writing the new key file but before switching: the re-run uses that
    key. Stopped after the last transaction but before removing the old key file: the re-run
    removes it and rebuilds the index, and starts no new rotation."""
    from facewarden.adapters.crypto import create_key_file, pending_key_path

    add_source(fw, admin)
    fw.ingest.run(admin, [GALLERY / "obama.jpg"], "press")
    key_file = settings.resolved_key_file
    old_key = read_key_file(key_file)
    pending = create_key_file(pending_key_path(key_file))  # as a killed first run left it
    report = fw.keys.rotate(admin)
    assert report["new_key"] == key_id_of(pending) and report["faces"] == 1
    assert read_key_file(key_file) == pending and not pending_key_path(key_file).exists()

    write_key_file(retiring_key_path(key_file), old_key)  # as if the unlink never happened
    lines: list[str] = []
    again = Facewarden(settings, fw.pipeline).keys.rotate(admin, lines.append)
    assert again["new_key"] == key_id_of(pending) and again["faces"] == 0
    assert lines[0].startswith("finishing the previous rotation")
    assert not retiring_key_path(key_file).exists()
    assert read_key_file(key_file) == pending
