"""Sources need a lawful basis; ingest is idempotent, resumable and records expiry."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from facewarden.adapters.storage.tables import FaceCrop, Media
from facewarden.core.actors import Actor
from facewarden.core.errors import InvalidInput, NotFound, PermissionDenied

from conftest import GALLERY, PROBES, REFERENCE, add_source


@pytest.mark.parametrize("missing", ["lawful_basis", "purpose", "jurisdiction", "retention"])
def test_source_without_mandatory_field_is_refused(fw, admin, missing):
    with pytest.raises(InvalidInput, match=missing.replace("_", " ")):
        add_source(fw, admin, **{missing: "  "})
    assert fw.sources.list() == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("jurisdiction", "Germany", "two-letter"),
        ("retention", "forever", "invalid duration"),
        ("retention", "0d", "positive"),
        ("retention", "6m", "invalid duration"),
    ],
)
def test_source_with_invalid_field_is_refused(fw, admin, field, value, message):
    with pytest.raises(InvalidInput, match=message):
        add_source(fw, admin, **{field: value})


def test_duplicate_source_and_unknown_source(fw, admin):
    add_source(fw, admin)
    with pytest.raises(InvalidInput, match="already exists"):
        add_source(fw, admin)
    with pytest.raises(NotFound, match="no source"):
        fw.ingest.run(admin, [GALLERY], "nope")


def test_ingest_needs_operator_role(fw, admin):
    add_source(fw, admin)
    with pytest.raises(PermissionDenied):
        fw.ingest.run(Actor("inv", frozenset({"investigator"})), [GALLERY], "press")


def test_every_media_gets_expiry_from_its_source(fw, admin):
    add_source(fw, admin, retention="30d")
    fw.ingest.run(admin, [GALLERY], "press")
    with fw.sessions() as s:
        for m in s.scalars(select(Media)):
            ingested = m.ingested_at.replace(tzinfo=None)
            expires = m.expires_at.replace(tzinfo=None)
            assert expires - ingested == timedelta(days=30)


def test_reingest_adds_nothing(fw, admin):
    add_source(fw, admin)
    first = fw.ingest.run(admin, [GALLERY], "press")
    second = fw.ingest.run(admin, [GALLERY, GALLERY / "obama.jpg"], "press")
    assert (first.images, first.faces) == (5, 5)
    assert (second.images, second.faces, second.duplicates) == (0, 0, 6)
    assert fw.stats()["faces"] == 5 == len(fw.index)


@pytest.mark.slow  # starts two ingest worker processes, each loading the models
def test_multi_face_image_and_two_workers(fw, admin):
    add_source(fw, admin)
    summary = fw.ingest.run(admin, [PROBES, REFERENCE], "press", workers=2)
    assert summary.images == 9 and not summary.skipped
    assert summary.faces >= 11  # two-person photos contribute two faces each
    with fw.sessions() as s:
        assert s.scalar(select(func.count(FaceCrop.face_id))) == summary.faces
    assert len(fw.index) == summary.faces


def _counts(db: Path):
    import sqlite3

    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "select m.sha256, count(f.id) from media m left join faces f "
            "on f.media_id = m.id group by m.id"
        ).fetchall()
        return dict(rows)
    finally:
        con.close()


CLI = [sys.executable, "-m", "facewarden"]
BATCH_SIZE = 14  # images in the gallery, probe and reference fixtures together
sqlite_only = pytest.mark.skipif(
    bool(os.environ.get("FACEWARDEN_TEST_PG_URL")), reason="inspects the SQLite file"
)


def _batch(tmp_path: Path) -> Path:
    batch = tmp_path / "batch"
    batch.mkdir()
    for d in (GALLERY, PROBES, REFERENCE):
        for f in d.iterdir():
            (batch / f"{d.name}_{f.name}").write_bytes(f.read_bytes())
    return batch


def _env(data_dir: Path, workers: str = "1") -> dict[str, str]:
    env = os.environ | {"FACEWARDEN_DATA_DIR": str(data_dir), "FACEWARDEN_WORKERS": workers}
    env.pop("FACEWARDEN_DATABASE_URL", None)
    return env


def _run(data_dir: Path, *args: str, workers: str = "1") -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [*CLI, *args], env=_env(data_dir, workers), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def _prepare(data_dir: Path) -> None:
    _run(data_dir, "init")
    _run(
        data_dir,
        "source",
        "add",
        "press",
        "--lawful-basis",
        "x",
        "--purpose",
        "y",
        "--jurisdiction",
        "FR",
        "--retention",
        "10d",
    )


def _start_ingest_and_wait(data_dir: Path, batch: Path, workers: str) -> subprocess.Popen:
    """Start a CLI ingest and return once at least two images are stored (still running)."""
    # dlib's own networks: slow enough (about 10 faces/s) that the run is still going when the
    # signal lands; with ONNX Runtime the 14 images can be done before the first poll.
    proc = subprocess.Popen(
        [*CLI, "ingest", str(batch), "--source", "press", "--json"],
        env=_env(data_dir, workers) | {"FACEWARDEN_RUNTIME": "dlib"},
        # A shell without job control starts background jobs with SIGINT ignored, and Python
        # then installs no KeyboardInterrupt handler: give the CLI the default disposition.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    db = data_dir / "facewarden.db"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if db.exists() and len(_counts(db)) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "ingest finished before it could be interrupted"
    return proc


@sqlite_only
@pytest.mark.slow
def test_killed_ingest_resumes_without_duplicates_or_half_records(tmp_path):
    """SIGKILL the CLI mid-ingest, re-run: the result equals one clean ingest."""
    batch, data = _batch(tmp_path), tmp_path / "data"
    _prepare(data)
    proc = _start_ingest_and_wait(data, batch, "1")
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    partial = _counts(data / "facewarden.db")
    assert 2 <= len(partial) < BATCH_SIZE
    _run(data, "ingest", str(batch), "--source", "press", "--json")
    final = _counts(data / "facewarden.db")
    # a clean ingest of the same batch, for comparison
    _prepare(tmp_path / "clean")
    _run(tmp_path / "clean", "ingest", str(batch), "--source", "press")
    assert final == _counts(tmp_path / "clean" / "facewarden.db")
    for sha, faces in partial.items():
        assert final[sha] == faces  # records written before the kill were already whole
    stats = json.loads(_run(data, "stats", "--json").stdout)
    assert stats["faces"] == sum(final.values()) == stats["index_size"]


@sqlite_only
@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_stops_cleanly_with_a_summary_and_resumes(tmp_path, workers):
    batch, data = _batch(tmp_path), tmp_path / "data"
    _prepare(data)
    proc = _start_ingest_and_wait(data, batch, workers)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err, len(_counts(data / "facewarden.db")))
    summary = json.loads(out)
    assert summary["interrupted"] is True and summary["images"] >= 2
    partial = _counts(data / "facewarden.db")
    # every stored image is whole; at most the one committed as the signal landed is uncounted
    assert summary["images"] <= len(partial) <= summary["images"] + 1
    resumed = json.loads(
        _run(data, "ingest", str(batch), "--source", "press", "--json", workers=workers).stdout
    )
    assert resumed["duplicates"] == len(partial) and not resumed["interrupted"]
    assert len(_counts(data / "facewarden.db")) == BATCH_SIZE
