"""Background ingest jobs for uploads: one at a time, with progress and cancel.

Uploaded files wait under ``<data_dir>/uploads/<job>/`` and are removed when the job ends.
Ingest is idempotent per image (content hash), so a job cut short by a restart is resumed
by uploading the same files again: what was stored is skipped as a duplicate.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from facewarden.config import Settings
from facewarden.core.actors import Actor
from facewarden.core.clock import utcnow
from facewarden.core.errors import FacewardenError, InvalidInput, NotFound, Throttled
from facewarden.core.faults import storage_failure
from facewarden.services.access import RoleGuard
from facewarden.services.ingest import IngestService
from facewarden.services.sources import SourceService

SAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")


NAME_CHARS = 120


def safe_name(name: str, taken: set[str]) -> str:
    """The upload's base name, without path parts or odd characters, unique in the job, at
    most ``NAME_CHARS`` long: a long name is shortened in its stem, so it keeps its extension
    (the extension decides whether a file is read as an image)."""
    base = SAFE_NAME.sub("_", Path(name.replace("\\", "/")).name).strip(" .") or "upload"
    stem, dot, ext = base.rpartition(".")
    if not stem or len(ext) > 10:
        stem, dot, ext = base, "", ""
    candidate, n = _fit(stem, "", dot + ext), 1
    while candidate in taken:
        candidate = _fit(stem, f"-{n}", dot + ext)
        n += 1
    taken.add(candidate)
    return candidate


def _fit(stem: str, suffix: str, ext: str) -> str:
    return stem[: max(1, NAME_CHARS - len(suffix) - len(ext))] + suffix + ext


@dataclass
class Job:
    id: str
    user: str
    source: str
    files: list[str]
    state: str = "queued"
    """queued, running, done, cancelled or failed."""
    done: int = 0
    total: int | None = None
    current: str = ""
    created_at: str = field(default_factory=lambda: utcnow().isoformat())
    finished_at: str | None = None
    summary: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    cancelled_by: str | None = None
    """Who cancelled the job (its uploader or an admin), when someone did."""
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.id,
            "user": self.user,
            "source": self.source,
            "files": self.files,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "current": self.current,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "summary": self.summary,
            "error": self.error,
            "cancelled_by": self.cancelled_by,
        }


ACCESS_RECHECK_S = 2.0
"""How often a running job checks that its uploader may still ingest."""


class _Stopped(Exception):
    """The uploader may no longer ingest: the job does not start."""


class IngestJobs:
    def __init__(
        self,
        settings: Settings,
        guard: RoleGuard,
        sessions: Callable[[], Any],
        sources: SourceService,
        ingest: IngestService,
        current: Callable[[str], Actor],
        keep: int = 200,
    ) -> None:
        """``current``: the user of a name as they stand now (``UserService.current``)."""
        self.settings, self.guard, self.sessions = settings, guard, sessions
        self.sources, self.ingest, self.current = sources, ingest, current
        self.root = settings.upload_dir
        self.keep = keep
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ingest-job")
        # Left-overs of a previous run (the server stopped mid-job) are not resumed here.
        shutil.rmtree(self.root, ignore_errors=True)

    def submit(self, actor: Actor, source: str, uploads: Iterable[tuple[str, IO[bytes]]]) -> Job:
        """Check the rules, save the uploads and queue the job."""
        self.guard.authorize(actor, "ingest", "operator", details={"source": source})
        with self.sessions() as session:
            self.sources.get(session, source)  # NotFound before anything is written
        with self._lock:
            waiting = sum(
                1 for j in self.jobs.values() if j.user == actor.name and j.finished_at is None
            )
        if waiting >= self.settings.max_jobs_per_user:
            self.guard.audit.record(
                actor,
                "ingest",
                outcome="refused",
                error="too many upload jobs waiting",
                details={"source": source, "jobs_waiting": waiting},
            )
            raise Throttled(
                f"you have {waiting} upload jobs queued or running (at most "
                f"{self.settings.max_jobs_per_user}, FACEWARDEN_MAX_JOBS_PER_USER): wait for one "
                "to end or cancel one",
                retry_after=30,
                code="too_many_jobs",
            )
        job = Job(secrets.token_hex(8), actor.name, source, [])
        folder = self.root / job.id
        folder.mkdir(parents=True, mode=0o700)
        taken: set[str] = set()
        try:
            for name, stream in uploads:
                target = folder / safe_name(name, taken)
                with target.open("wb") as out:
                    shutil.copyfileobj(stream, out, 1 << 20)
                job.files.append(target.name)
            if not job.files:
                raise InvalidInput("no files uploaded")
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        with self._lock:
            self.jobs[job.id] = job
            self._forget_old()
        self._pool.submit(self._run, job, actor, folder)
        return job

    def _run(self, job: Job, actor: Actor, folder: Path) -> None:
        prefix = str(folder) + os.sep

        def relabel(path: str) -> str:
            """Provenance and progress name the upload, never the server's folders."""
            if path == str(folder):
                return f"upload/{job.id}"
            return f"upload/{job.id}/{path.removeprefix(prefix)}"

        def progress(done: int, total: int, label: str) -> None:
            job.done, job.total, job.current = done, total, label

        checked_at = -math.inf

        def stopped() -> bool:
            """Cancelled, or the uploader may no longer ingest: disabled or without the
            operator role since the upload (checked when the job starts and every
            ACCESS_RECHECK_S while it runs; the refusal is logged)."""
            nonlocal checked_at
            if job.cancel.is_set():
                return True
            if time.monotonic() - checked_at >= ACCESS_RECHECK_S:
                checked_at = time.monotonic()
                details = {"source": job.source, "job": job.id}
                try:
                    try:
                        now = self.current(actor.name)
                    except FacewardenError as exc:  # disabled: logged here, like a refusal
                        self.guard.audit.record(
                            actor, "ingest", outcome="refused", error=exc.message, details=details
                        )
                        raise
                    self.guard.authorize(now, "ingest", "operator", details=details)
                except FacewardenError as exc:
                    job.error = {"code": exc.code, "message": f"job stopped: {exc.message}"}
                    job.cancel.set()
                    return True
            return False

        job.state = "running"
        try:
            if stopped():  # queued before the uploader was disabled: never starts
                raise _Stopped
            summary = self.ingest.run(
                actor,
                [folder],
                job.source,
                workers=min(self.settings.workers, max(1, len(job.files))),
                progress=progress,
                relabel=relabel,
                cancelled=stopped,
            )
            job.summary = summary.as_dict()
            job.state = "failed" if job.error else "cancelled" if summary.interrupted else "done"
        except _Stopped:
            job.state = "failed"
        except FacewardenError as exc:
            job.state, job.error = "failed", {"code": exc.code, "message": exc.message}
        except Exception as exc:  # a job must end with a state, not vanish
            job.state = "failed"
            full = storage_failure(exc)
            job.error = (
                {"code": full.code, "message": full.message}
                if full is not None
                else {"code": "internal", "message": f"{type(exc).__name__}: {exc}"}
            )
        finally:
            job.finished_at = utcnow().isoformat()
            shutil.rmtree(folder, ignore_errors=True)

    def _forget_old(self) -> None:
        finished = [j for j in self.jobs.values() if j.finished_at]
        for old in finished[: max(0, len(self.jobs) - self.keep)]:
            del self.jobs[old.id]

    def get(self, actor: Actor, job_id: str) -> Job:
        """A job of the caller (admins see all); others' jobs do not exist for them."""
        self.guard.authorize(actor, "ingest.status", "operator", "admin")
        job = self.jobs.get(job_id)
        if job is None or (job.user != actor.name and not actor.has("admin")):
            raise NotFound(f"no ingest job {job_id!r}")
        return job

    def list(self, actor: Actor) -> list[Job]:
        self.guard.authorize(actor, "ingest.status", "operator", "admin")
        return [
            j for j in reversed(self.jobs.values()) if j.user == actor.name or actor.has("admin")
        ]

    def cancel(self, actor: Actor, job_id: str) -> Job:
        """Stop a queued or running job (its uploader or an admin): logged as
        ``ingest.cancel`` before it takes effect, and the job names who cancelled it. A job
        that has ended stays as it ended (nothing is logged)."""
        job = self.get(actor, job_id)
        with self._lock:
            if job.finished_at is not None or job.cancel.is_set():
                return job
            self.guard.audit.record(
                actor,
                "ingest.cancel",
                details={
                    "job": job.id,
                    "source": job.source,
                    "uploader": job.user,
                    "state": job.state,
                },
            )
            job.cancelled_by = actor.name
            job.cancel.set()
            if job.state == "queued":
                job.state = "cancelled"
        return job

    def shutdown(self) -> None:
        for job in self.jobs.values():
            job.cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
