"""Worker processes die with their parent: ``kill -9`` of a CLI ingest or of the server
during an ingest leaves no facewarden process behind (workers, resource tracker)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from PIL import Image
from webserver import facewarden_command, running_server

from conftest import GALLERY, add_source

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
    env = os.environ | {"FACEWARDEN_DATA_DIR": str(settings.data_dir)}
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


def test_server_ingest_workers_die_with_a_killed_server(server, tmp_path):
    parent = server_process(server)
    images = varied_images(tmp_path / "upload", 40)
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in images]
    r = server.client().post("/api/v1/ingest", data={"source": "press"}, files=files)
    assert r.status_code == 202, r.text
    kids = wait_for_workers(parent, 2)
    kill_and_check(parent, kids)
