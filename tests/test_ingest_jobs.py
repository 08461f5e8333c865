"""Upload ingest jobs (services/jobs.py) on a real data directory: the uploader's access is
checked again when the job starts and while it runs, and the job's records name the upload,
never the server's folders."""

from __future__ import annotations

import io
import json
import threading
import time

import pytest
from sqlalchemy import select

from facewarden.adapters.storage.tables import AuditEvent, Media
from facewarden.core.errors import Throttled
from facewarden.services.jobs import IngestJobs
from facewarden.web.errors import status_of

from conftest import GALLERY, add_source, add_user


def _jobs(fw, current) -> IngestJobs:
    return IngestJobs(fw.settings, fw.guard, fw.sessions, fw.sources, fw.ingest, current)


def _wait(job, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while job.finished_at is None:
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def _uploads(*names: str) -> list[tuple[str, io.BytesIO]]:
    return [(name, io.BytesIO((GALLERY / name).read_bytes())) for name in names]


def _events(fw, action: str) -> list[AuditEvent]:
    with fw.sessions() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def test_a_job_whose_uploader_was_disabled_does_not_run(fw, admin):
    add_source(fw, admin)
    olga = add_user(fw, admin, "olga", "operator")

    def disabled_as_the_job_starts(name: str):
        fw.users.set_active(admin, name, False)  # an admin disables her meanwhile
        return fw.users.current(name)

    jobs = _jobs(fw, disabled_as_the_job_starts)
    try:
        job = jobs.submit(olga, "press", _uploads("obama.jpg"))
        _wait(job)
    finally:
        jobs.shutdown()
    assert job.state == "failed" and job.error["code"] == "user_disabled", job
    assert job.summary is None and not _events(fw, "ingest.start")
    with fw.sessions() as s:
        assert s.scalar(select(Media.id)) is None  # nothing stored
    (refused,) = [e for e in _events(fw, "ingest") if e.outcome == "refused"]
    assert refused.actor == "olga" and json.loads(refused.details)["job"] == job.id


def test_a_running_job_stops_when_its_uploader_loses_the_role(fw, admin, monkeypatch):
    add_source(fw, admin)
    olga = add_user(fw, admin, "olga", "operator")
    monkeypatch.setattr("facewarden.services.jobs.ACCESS_RECHECK_S", 0.0)  # check each image
    calls = 0

    def demoted_after_the_first_check(name: str):
        nonlocal calls
        calls += 1
        actor = fw.users.current(name)
        return actor if calls == 1 else type(actor)(actor.name, frozenset({"investigator"}))

    jobs = _jobs(fw, demoted_after_the_first_check)
    try:
        job = jobs.submit(olga, "press", _uploads("obama.jpg", "biden.jpg", "kit_harington.jpg"))
        _wait(job)
    finally:
        jobs.shutdown()
    assert job.state == "failed" and job.error["code"] == "permission_denied", job
    assert job.summary is not None and job.summary["interrupted"] is True
    assert job.summary["images"] < 3
    refusals = [e for e in _events(fw, "ingest") if e.outcome == "refused"]
    assert refusals and json.loads(refusals[0].details)["job"] == job.id


def test_a_jobs_records_name_the_upload_not_the_server_folders(fw, admin):
    add_source(fw, admin)
    olga = add_user(fw, admin, "olga", "operator")
    jobs = _jobs(fw, fw.users.current)
    try:
        job = jobs.submit(olga, "press", _uploads("obama.jpg", "biden.jpg"))
        _wait(job)
    finally:
        jobs.shutdown()
    assert job.state == "done" and job.summary["images"] == 2, job
    # Progress names the file once (it was upload/<job>/upload/<job>/...).
    assert job.current.startswith(f"upload/{job.id}/") and job.current.count("upload/") == 1
    (start,) = _events(fw, "ingest.start")
    assert json.loads(start.details)["paths"] == [f"upload/{job.id}"]
    with fw.sessions() as s:
        paths = sorted(s.scalars(select(Media.path)))
    assert paths == sorted(f"upload/{job.id}/{name}" for name in job.files)
    assert str(fw.settings.upload_dir) not in start.details


def test_who_cancels_a_job_is_logged_first_and_named_on_the_job(fw, admin):
    add_source(fw, admin)
    olga = add_user(fw, admin, "olga", "operator")
    started, release = threading.Event(), threading.Event()

    def held_at_start(name: str):  # the job waits in its first access check
        started.set()
        release.wait(60)
        return fw.users.current(name)

    jobs = _jobs(fw, held_at_start)
    try:
        running = jobs.submit(olga, "press", _uploads("obama.jpg"))
        queued = jobs.submit(olga, "press", _uploads("biden.jpg"))
        assert started.wait(60)
        assert jobs.cancel(admin, queued.id).state == "cancelled"  # an admin, on olga's job
        jobs.cancel(olga, running.id)
        release.set()
        _wait(running)
        _wait(queued)
        jobs.cancel(olga, running.id)  # ended: stays as it ended, nothing more logged
    finally:
        release.set()
        jobs.shutdown()
    assert (queued.cancelled_by, running.cancelled_by) == ("admin", "olga")
    assert running.state == "cancelled" and running.as_dict()["cancelled_by"] == "olga"
    cancels = _events(fw, "ingest.cancel")
    assert [(e.actor, json.loads(e.details)["job"]) for e in cancels] == [
        ("admin", queued.id),
        ("olga", running.id),
    ]
    assert json.loads(cancels[0].details)["uploader"] == "olga"


def test_one_user_cannot_queue_more_upload_jobs_than_allowed(fw, admin):
    add_source(fw, admin)
    olga = add_user(fw, admin, "olga", "operator")
    rita = add_user(fw, admin, "rita", "operator")
    release = threading.Event()

    def held(name: str):
        release.wait(60)
        return fw.users.current(name)

    fw.settings.max_jobs_per_user = 2
    jobs = _jobs(fw, held)
    try:
        first = jobs.submit(olga, "press", _uploads("obama.jpg"))
        jobs.submit(olga, "press", _uploads("biden.jpg"))
        with pytest.raises(Throttled, match="2 upload jobs queued or running") as refused:
            jobs.submit(olga, "press", _uploads("kit_harington.jpg"))
        assert refused.value.retry_after > 0 and refused.value.code == "too_many_jobs"
        assert status_of(refused.value) == 429  # the API's answer: not a server fault (5xx)
        assert sorted(p.name for p in fw.settings.upload_dir.iterdir()) == sorted(
            j.id for j in jobs.list(olga)
        )  # the refused upload left no folder
        jobs.submit(rita, "press", _uploads("kit_harington.jpg"))  # another user's own limit
        release.set()
        _wait(first)
        for job in jobs.list(admin):
            _wait(job)
        jobs.submit(olga, "press", _uploads("rose_leslie.jpg"))  # room again
    finally:
        release.set()
        jobs.shutdown()
    refusals = [e for e in _events(fw, "ingest") if e.outcome == "refused"]
    assert [(e.actor, json.loads(e.details)["jobs_waiting"]) for e in refusals] == [("olga", 2)]
