"""Fault injection: the server is killed with SIGKILL during an erasure, and during an upload
ingest, while four clients keep searching. After a restart: the audit chain verifies (the
``audit verify`` command), no half record is left, the index equals the database, re-running
the operation is idempotent and an erased person stays erased."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest
from PIL import Image
from sqlalchemy import func, select
from webserver import Server, facewarden_command, prepared_seed, running_server, serving

from facewarden.adapters.storage.tables import AuditEvent, Face, Media, SubjectRequest
from facewarden.services.app import Facewarden

from conftest import GALLERY, PROBES, Seed, make_settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ENV = {"FACEWARDEN_SEARCH_WORKERS": "2", "FACEWARDEN_SEARCH_RATE_LIMIT": "1000000/minute"}
LOAD_PROBES = ["alex_lacamoire1.jpg", "johnsnow_test1.jpg", "kit_with_rose.jpg"]


def variants(folder: Path, source: Path, count: int, prefix: str) -> list[Path]:
    """``count`` distinct JPEGs of one photo (a corner block differs in each)."""
    folder.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as img:
        rgb = img.convert("RGB")
    paths = []
    for n in range(count):
        rgb.paste((n * 37 % 256, n * 91 % 256, 255 - n), (0, 0, 8, 8))
        path = folder / f"{prefix}-{n:03d}.jpg"
        rgb.save(path, quality=92)
        paths.append(path)
    assert len({hashlib.sha256(p.read_bytes()).digest() for p in paths}) == count
    return paths


def server_process(server: Server) -> psutil.Process:
    port = server.url.rsplit(":", 1)[1]
    for p in psutil.Process().children(recursive=True):
        if "serve" in p.cmdline() and port in p.cmdline():
            return p
    raise AssertionError("server process not found")


@contextmanager
def restarted(server: Server) -> Iterator[Server]:
    """The same data directory (and database) served again by a new process."""
    log = server.log.with_name("restarted.log")
    with serving(
        server.data_dir, server.tokens, log, server.database_url, seconds=120, **ENV
    ) as again:
        yield again


class Load:
    """Four clients searching small probes without pause until stopped (a refusal, busy or
    a dropped connection when the server is killed, is part of the run)."""

    def __init__(self, server: Server, case: str) -> None:
        self.codes: list[int | str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(server, case, n), daemon=True)
            for n in range(4)
        ]
        for t in self._threads:
            t.start()

    def _client(self, server: Server, case: str, n: int) -> None:
        with httpx.Client(
            base_url=server.url,
            headers={"Authorization": f"Bearer {server.tokens['ines']}"},
            timeout=60,
        ) as client:
            while not self._stop.is_set():
                name = LOAD_PROBES[(n + len(self.codes)) % len(LOAD_PROBES)]
                try:
                    r = client.post(
                        "/api/v1/search",
                        data={"case": case},
                        files={"image": (name, (PROBES / name).read_bytes(), "image/jpeg")},
                    )
                    self.codes.append(r.status_code)
                except httpx.TransportError as exc:
                    self.codes.append(type(exc).__name__)
                    time.sleep(0.2)

    def wait_for(self, count: int, timeout_s: float = 300) -> None:
        end = time.monotonic() + timeout_s
        while sum(c == 200 for c in self.codes) < count:
            assert time.monotonic() < end, self.codes[-20:]
            time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(90)


def open_load_case(server: Server) -> str:
    r = server.client().post(
        "/api/v1/cases",
        json={
            "ref": "LOAD-1",
            "purpose": "load during faults",
            "legal_basis": "StPO s.98c",
            "authorisation": "court order 13/2026",
            "investigators": ["ines"],
            "quota": 100_000,
        },
    )
    assert r.status_code == 201, r.text
    return "LOAD-1"


def upload(server: Server, paths: list[Path]) -> str:
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]
    r = server.client().post("/api/v1/ingest", data={"source": "press"}, files=files)
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def wait_job(server: Server, job: str, timeout_s: float = 600) -> dict:
    end = time.monotonic() + timeout_s
    client = server.client()
    while time.monotonic() < end:
        state = client.get(f"/api/v1/jobs/{job}").json()
        if state["state"] not in ("queued", "running"):
            return state
        time.sleep(0.3)
    raise AssertionError("the ingest job did not finish")


def kill(server: Server) -> None:
    """SIGKILL the server; its workers follow it (see test_worker_lifecycle)."""
    proc = server_process(server)
    kids = proc.children(recursive=True)
    os.kill(proc.pid, signal.SIGKILL)
    _, alive = psutil.wait_procs([proc, *kids], timeout=10)
    assert not [p for p in alive if p.is_running()], alive


def audit_verify_command(server: Server) -> None:
    env = os.environ | {
        "FACEWARDEN_DATA_DIR": str(server.data_dir),
        "FACEWARDEN_TOKEN": server.tokens["admin"],
    }
    if server.database_url:
        env["FACEWARDEN_DATABASE_URL"] = server.database_url
    run = subprocess.run(
        [*facewarden_command(), "--as", "admin", "audit", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "audit chain intact" in run.stdout


def index_equals_database(server: Server, pipeline) -> set[int]:
    """The face ids, after checking that a process opening the data directory has exactly
    them in its index, and that the serving process reports as many."""
    fw = Facewarden(make_settings(server.data_dir, server.database_url), pipeline)
    try:
        with fw.sessions() as s:
            face_ids = set(s.scalars(select(Face.id)))
        assert set(fw.index.ids().tolist()) == face_ids
    finally:
        fw.close()
    stats = server.client().get("/api/v1/stats").json()
    assert stats["index_size"] == stats["faces"] == len(face_ids), stats
    return face_ids


def erase(server: Server, selfie: bytes) -> httpx.Response:
    return server.client("dora").post(
        "/api/v1/subjects/erase",
        data={"confirm": "true", "reference": "REQ-FAULT"},
        files={"selfie": ("selfie.jpg", selfie, "image/jpeg")},
    )


@pytest.fixture(scope="module")
def erasure_seed(tmp_path_factory, pipeline) -> Iterator[tuple[Seed, dict[str, str]]]:
    """The servers' gallery with 30 more photos of the person to erase and 10 of another,
    ingested once for both kill points (each test serves a copy of it)."""
    root = tmp_path_factory.mktemp("fault-erasure")

    def prepare(fw: Facewarden, admin) -> None:
        person = variants(root / "person", GALLERY / "obama.jpg", 30, "obama")
        others = variants(root / "others", GALLERY / "biden.jpg", 10, "biden")
        summary = fw.ingest.run(admin, person + others, "press")
        assert summary.images == 40 and summary.faces >= 40, summary

    with prepared_seed(root / "data", pipeline, prepare) as seed:
        yield seed


@pytest.mark.parametrize("later", [1.0, 4.0], ids=["as-it-writes", "later"])
def test_kill_during_an_erasure_under_load(tmp_path, pipeline, erasure_seed, later):
    """Killed about when the erasure writes (one selfie analysis in), or later: either way
    all of it or none of it is there after the restart."""
    selfie = (GALLERY / "obama.jpg").read_bytes()
    with running_server(tmp_path, pipeline, seed=erasure_seed, **ENV) as server:
        case = open_load_case(server)
        dora = server.client("dora")
        preview = dora.post(
            "/api/v1/subjects/erase/preview",
            files={"selfie": ("selfie.jpg", selfie, "image/jpeg")},
        )
        assert preview.status_code == 200, preview.text
        strict = {m["face_id"] for m in preview.json() if m["proposal"] == "erase"}
        review = {m["face_id"] for m in preview.json() if m["proposal"] == "review"}
        assert len(strict) >= 31, preview.json()  # the gallery photo and its 30 copies
        took = preview.elapsed.total_seconds()
        before = face_ids(server)

        load = Load(server, case)
        try:
            load.wait_for(8)
            answer: list[httpx.Response | Exception] = []

            def send() -> None:
                try:
                    answer.append(erase(server, selfie))
                except httpx.TransportError as exc:
                    answer.append(exc)

            sender = threading.Thread(target=send)
            sender.start()
            time.sleep(took * later)
            kill(server)
            sender.join(60)
        finally:
            load.stop()
        assert 200 in load.codes and all(isinstance(c, str) or c < 500 for c in load.codes), (
            load.codes
        )

        with restarted(server) as again:
            audit_verify_command(again)
            faces = index_equals_database(again, pipeline)
            fw = Facewarden(make_settings(server.data_dir, server.database_url), pipeline)
            try:
                with fw.sessions() as s:
                    requests = list(s.scalars(select(SubjectRequest)))
                    erasures = list(
                        s.scalars(select(AuditEvent).where(AuditEvent.action == "subject.erase"))
                    )
            finally:
                fw.close()
            # Either the whole erasure is there (request, receipt, audit record, faces
            # gone) or none of it (every face of the person still there).
            assert len(requests) == len(erasures) <= 1
            print(f"killed {took * later:.2f} s into the erasure: committed {bool(requests)}")
            if requests:
                committed = requests[0]
                assert committed.completed_at and committed.receipt and committed.audit_seq
                details = erasures[0].details
                details = json.loads(details) if isinstance(details, str) else details
                assert details["request_id"] == committed.id
                assert strict.isdisjoint(faces)
            else:
                assert strict <= faces
            assert faces | strict == before

            # Re-running the erasure erases exactly what was left of it, once.
            first = erase(again, selfie)
            assert first.status_code == 200, first.text
            assert set(first.json()["face_ids"]) == (strict & faces)
            second = erase(again, selfie)
            assert second.status_code == 200, second.text
            assert second.json()["face_ids"] == []
            assert index_equals_database(again, pipeline) == before - strict
            audit_verify_command(again)

            # The person stays erased: their other photos find none of their faces; others
            # in the same photo are still found.
            ines = again.client("ines")
            for probe in ("obama1.jpg", "obama_and_biden.jpg"):
                r = ines.post(
                    "/api/v1/search",
                    data={"case": case},
                    files={"image": (probe, (PROBES / probe).read_bytes(), "image/jpeg")},
                )
                assert r.status_code == 200, r.text
                found = [c for f in r.json()["faces"] for c in f["candidates"]]
                assert not {c["face_id"] for c in found} & (strict | review), found
                assert not [c for c in found if "obama" in c["media_path"]], found
                if probe == "obama_and_biden.jpg":
                    assert [c for c in found if "biden" in c["media_path"]], found
            assert "Traceback" not in again.log.read_text()


def face_ids(server: Server) -> set[int]:
    """The face ids in the database now."""
    fw = Facewarden(make_settings(server.data_dir, server.database_url))
    try:
        with fw.sessions() as s:
            return set(s.scalars(select(Face.id)))
    finally:
        fw.close()


def test_kill_during_an_upload_ingest_under_load(tmp_path, pipeline):
    with running_server(tmp_path, pipeline, **ENV) as server:
        case = open_load_case(server)
        batch = variants(tmp_path / "batch", GALLERY / "alex_lacamoire.jpg", 25, "alex")
        batch += variants(tmp_path / "batch2", GALLERY / "kit_harington.jpg", 25, "kit")
        hashes = {hashlib.sha256(p.read_bytes()).hexdigest() for p in batch}
        load = Load(server, case)
        try:
            load.wait_for(8)
            job = upload(server, batch)
            client = server.client()
            end = time.monotonic() + 300
            while client.get(f"/api/v1/jobs/{job}").json()["done"] < 5:
                assert time.monotonic() < end, "the upload's ingest did not start"
                time.sleep(0.1)
            kill(server)
        finally:
            load.stop()
        assert 200 in load.codes and all(isinstance(c, str) or c < 500 for c in load.codes), (
            load.codes
        )

        with restarted(server) as again:
            audit_verify_command(again)
            index_equals_database(again, pipeline)
            fw = Facewarden(make_settings(server.data_dir, server.database_url), pipeline)
            try:
                with fw.sessions() as s:  # no media stored without its faces
                    assert s.scalar(select(func.count(Media.id)).where(~Media.faces.any())) == 0
                    kept = s.scalar(select(func.count(Media.id)).where(Media.sha256.in_(hashes)))
            finally:
                fw.close()
            assert 0 < kept < len(hashes)  # killed part-way
            # Re-running the batch stores the rest, each distinct image exactly once.
            state = wait_job(again, upload(again, batch))
            assert state["state"] == "done", state
            assert state["summary"]["images"] == len(hashes) - kept, state
            assert state["summary"]["duplicates"] == kept, state
            state = wait_job(again, upload(again, batch))
            assert state["summary"]["images"] == 0, state
            fw = Facewarden(make_settings(server.data_dir, server.database_url), pipeline)
            try:
                with fw.sessions() as s:
                    stored = s.scalar(select(func.count(Media.id)).where(Media.sha256.in_(hashes)))
            finally:
                fw.close()
            assert stored == len(hashes)
            index_equals_database(again, pipeline)
            audit_verify_command(again)
            assert "Traceback" not in again.log.read_text()
