"""Worker processes die with their parent: ``kill -9`` of a CLI ingest or of the server
during an ingest leaves no facewarden process behind (workers, resource tracker)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from PIL import Image
from sqlalchemy import func, select
from webserver import facewarden_command, running_server

from facewarden.adapters.storage.tables import Face, Media
from facewarden.services.app import Facewarden

from conftest import GALLERY, PG_ADMIN_URL, add_source, make_settings

pytestmark = pytest.mark.slow  # kills a CLI ingest and a server with their worker processes

EXIT_GRACE_S = 5.0
"""The guarantee: nothing of the killed process is left after this long."""


def varied_images(folder: Path, count: int) -> list[Path]:
    """``count`` distinct JPEGs (one pixel differs) of the gallery faces."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(GALLERY.glob("*.jpg"))
    paths = []
    for n in range(count):
        with Image.open(sources[n % len(sources)]) as img:
            rgb = img.convert("RGB")
        rgb.putpixel((0, 0), (n % 256, n // 256, 7))
        path = folder / f"img{n:03d}.jpg"
        rgb.save(path, quality=92)
        paths.append(path)
    return paths


def wait_for_workers(parent: psutil.Process, count: int, deadline_s: float = 120) -> list:
    """The parent's descendants once at least ``count`` exist (the pool has started)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        kids = parent.children(recursive=True)
        if len(kids) >= count:
            return kids
        time.sleep(0.1)
    raise AssertionError(f"no {count} worker processes appeared")


def wait_for_stored(fw: Facewarden, proc: subprocess.Popen, deadline_s: float = 300) -> None:
    """Until the ingest has stored an image."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        with fw.sessions() as s:
            if s.scalar(select(func.count(Media.id)).where(Media.path.like("%img%"))):
                return
        assert proc is None or proc.poll() is None, "the ingest ended early"
        time.sleep(0.1)
    raise AssertionError("nothing was stored")


def kill_and_check(parent: psutil.Process, kids: list[psutil.Process]) -> None:
    # Every descendant known by now, the pool's workers and the resource tracker included.
    kids = list({p.pid: p for p in kids + parent.children(recursive=True)}.values())
    os.kill(parent.pid, signal.SIGKILL)
    _, alive = psutil.wait_procs(kids, timeout=EXIT_GRACE_S)
    survivors = [f"{p.pid} {p.cmdline()}" for p in alive if p.is_running()]
    for p in alive:  # do not leak them into the rest of the test session
        p.kill()
    assert not survivors, survivors


def test_cli_ingest_workers_die_with_a_killed_parent(fw, admin, settings, tmp_path):
    add_source(fw, admin)
    folder = tmp_path / "batch"
    varied_images(folder, 60)
    token = fw.users.rotate(admin)  # the CLI acts by the admin's credential
    env = os.environ | {"FACEWARDEN_DATA_DIR": str(settings.data_dir), "FACEWARDEN_TOKEN": token}
    if settings.database_url:
        env["FACEWARDEN_DATABASE_URL"] = settings.database_url
    proc = subprocess.Popen(
        [*facewarden_command(), "--as", "admin", "ingest", str(folder), "--source", "press",
         "--workers", "2", "--json"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        parent = psutil.Process(proc.pid)
        kids = wait_for_workers(parent, 2)
        wait_for_stored(fw, proc)  # the workers are past their start-up (see docs)
        kill_and_check(parent, kids)
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def server(tmp_path, pipeline):
    with running_server(tmp_path, pipeline, FACEWARDEN_WORKERS="2") as s:
        yield s


def server_process(server) -> psutil.Process:
    port = int(server.url.rsplit(":", 1)[1])
    for p in psutil.Process().children(recursive=True):
        if "serve" in p.cmdline() and str(port) in p.cmdline():
            return p
    raise AssertionError("server process not found")


def test_server_ingest_workers_die_with_a_killed_server(server, tmp_path, pipeline):
    parent = server_process(server)
    images = varied_images(tmp_path / "upload", 40)
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in images]
    r = server.client().post("/api/v1/ingest", data={"source": "press"}, files=files)
    assert r.status_code == 202, r.text
    kids = wait_for_workers(parent, 5)  # probe workers, ingest workers, resource tracker
    client = server.client()
    end = time.monotonic() + 300
    while not any(j["done"] for j in client.get("/api/v1/jobs").json()):
        assert time.monotonic() < end, "the upload's ingest did not start"
        time.sleep(0.1)
    kill_and_check(parent, kids)
    if PG_ADMIN_URL:
        return  # the server's PostgreSQL database is not reachable from here
    # What the killed server left: an intact chain, no half record, the index reconciled
    # with the database, and a re-run that completes the batch exactly once.
    fw = Facewarden(make_settings(server.data_dir, None), pipeline)
    admin = fw.actor(name="admin")
    assert fw.audit.verify().ok
    with fw.sessions() as s:
        assert s.scalar(select(func.count(Media.id)).where(~Media.faces.any())) == 0
        face_ids = set(s.scalars(select(Face.id)))
    assert set(fw.index.ids().tolist()) == face_ids
    fw.ingest.run(admin, [images[0].parent], "press")
    again = fw.ingest.run(admin, [images[0].parent], "press")
    assert again.images == 0 and again.duplicates == 40, again
    hashes = {hashlib.sha256(p.read_bytes()).hexdigest() for p in images}
    with fw.sessions() as s:
        stored = s.scalar(select(func.count(Media.id)).where(Media.sha256.in_(hashes)))
    assert stored == len(hashes)  # every distinct image exactly once
    fw.close()
