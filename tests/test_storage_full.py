"""A full disk, simulated by a write limit on the process (``RLIMIT_FSIZE``: a write beyond
the limit fails with EFBIG as on a full file system): writes fail with a clear
``storage_full`` error (CLI exit 1, API 503), nothing is half written, no temporary file is
left, read-only commands and the server's reads keep working, and a re-run once space is back
completes exactly."""

from __future__ import annotations

import os
import resource
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from webserver import facewarden_command, free_port

from facewarden.adapters.storage.tables import AuditEvent, CaseSearch, Face, Media
from facewarden.services.app import Facewarden

from conftest import GALLERY, PROBES, add_source, open_case

pytestmark = pytest.mark.slow  # the CLI or the server in subprocesses on a capped disk

LIMIT = 4096
"""Bytes a file may reach: less than one page of SQLite's write-ahead log. SQLite's shared
memory file already exists (a reader holds the database open), as on a disk that filled up
while facewarden ran."""


def limited(limit: int = LIMIT):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write, do not kill

    return apply


@pytest.fixture
def full(fw, admin, settings, tmp_path):
    """A data directory with a gallery and an open case, and how to run the CLI on it."""
    if settings.database_url:
        pytest.skip("the write limit holds this process's files; PostgreSQL writes elsewhere")
    add_source(fw, admin)
    fw.ingest.run(admin, [GALLERY], "press")
    open_case(fw, admin)
    token = fw.users.rotate(admin)  # the CLI acts by the admin's credential
    fw.close()
    reader = sqlite3.connect(settings.data_dir / "facewarden.db")
    reader.execute("SELECT count(*) FROM media").fetchone()
    assert (settings.data_dir / "facewarden.db-shm").stat().st_size >= 32768
    env = os.environ | {"FACEWARDEN_DATA_DIR": str(settings.data_dir), "FACEWARDEN_TOKEN": token}

    def run(*args: str, limit: int | None = LIMIT) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*facewarden_command(), "--as", "admin", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            preexec_fn=limited(limit) if limit else None,
        )

    yield run
    reader.close()


def counts(settings) -> dict[str, int]:
    fw = Facewarden(settings)
    with fw.sessions() as s:
        out = {
            "media": s.scalar(select(func.count(Media.id))),
            "faces": s.scalar(select(func.count(Face.id))),
            "searches": s.scalar(select(func.count(CaseSearch.id))),
            "events": s.scalar(select(func.count(AuditEvent.seq))),
            "bare_media": s.scalar(select(func.count(Media.id)).where(~Media.faces.any())),
        }
    fw.engine.dispose()
    return out


def leftovers(data_dir: Path) -> list[str]:
    return [str(p) for p in data_dir.rglob("*") if ".tmp" in p.name or p.name.endswith(".part")]


def assert_storage_full(run: subprocess.CompletedProcess) -> None:
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    assert "error [storage_full]" in run.stderr, run.stderr


def test_read_only_commands_work_on_a_full_disk(full, settings):
    for args in (["stats", "--json"], ["case", "list", "--json"], ["source", "list"]):
        run = full(*args)
        assert run.returncode == 0, run.stderr
        assert "Traceback" not in run.stderr
    assert leftovers(settings.data_dir) == []


def test_ingest_on_a_full_disk_fails_clearly_and_a_rerun_completes(full, settings, tmp_path):
    batch = tmp_path / "batch"
    batch.mkdir()
    for probe in PROBES.glob("*.jpg"):
        (batch / probe.name).write_bytes(probe.read_bytes())
    before = counts(settings)
    assert_storage_full(full("ingest", str(batch), "--source", "press", "--workers", "1"))
    assert leftovers(settings.data_dir) == []
    after = counts(settings)
    assert after["bare_media"] == 0  # no media stored without its faces
    fw = Facewarden(settings)
    with fw.sessions() as s:
        outcomes = list(
            s.scalars(
                select(AuditEvent.outcome).where(
                    AuditEvent.action == "ingest.finish", AuditEvent.seq > before["events"]
                )
            )
        )
    fw.engine.dispose()
    assert "ok" not in outcomes  # a failed ingest is never logged as a success
    rerun = full("ingest", str(batch), "--source", "press", "--workers", "1", "--json",
                 limit=None)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    final = counts(settings)
    assert final["media"] == before["media"] + len(list(batch.iterdir()))
    again = full("ingest", str(batch), "--source", "press", "--json", limit=None)
    assert counts(settings)["faces"] == final["faces"], again.stdout


def test_search_and_case_open_on_a_full_disk(full, settings):
    before = counts(settings)
    assert_storage_full(full("search", str(PROBES / "obama1.jpg"), "--case", "CASE-1"))
    assert_storage_full(
        full("case", "open", "C-2", "--purpose", "p", "--legal-basis", "b",
             "--authorisation", "a")
    )  # fmt: skip
    after = counts(settings)
    assert after["searches"] == before["searches"]
    assert leftovers(settings.data_dir) == []
    listed = full("case", "list", "--json", limit=None)
    assert "C-2" not in listed.stdout


def test_server_starts_on_a_full_disk_serves_reads_and_answers_503(fw, admin, settings, full):
    token = Facewarden(settings).users.add(admin, "ines", ["investigator"])
    fw_ = Facewarden(settings)
    fw_.cases.assign(admin, "CASE-1", "ines")
    fw_.close()
    port = free_port()
    env = os.environ | {
        "FACEWARDEN_DATA_DIR": str(settings.data_dir),
        "FACEWARDEN_SEARCH_WORKERS": "1",
        "FACEWARDEN_RETENTION_INTERVAL_MINUTES": "0",
    }
    log = settings.data_dir.parent / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*facewarden_command(), "serve", "--port", str(port), "--log-level", "warning"],
            env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=limited(),
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        with httpx.Client(base_url=url, timeout=120) as c:
            h = {"Authorization": f"Bearer {token}"}
            assert c.get("/api/v1/cases", headers=h).status_code == 200
            r = c.post(
                "/api/v1/search",
                headers=h,
                data={"case": "CASE-1"},
                files={"image": ("p.jpg", (PROBES / "obama1.jpg").read_bytes(), "image/jpeg")},
            )
            assert r.status_code == 503 and r.json()["error"]["code"] == "storage_full", r.text
            assert "Retry-After" in r.headers
    finally:
        proc.terminate()
        proc.wait(30)
    assert leftovers(settings.data_dir) == []
