"""Ingest: local files, folders and zip archives -> media, faces and encrypted templates.

Each image is one transaction (media row, its faces, templates and crops), so a crash or
Ctrl-C leaves whole records only; content hashes make a re-run skip what is done. Decoding,
detection and embedding run in worker processes; the main process alone writes.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from facewarden.adapters.index.base import FaceLabel
from facewarden.adapters.inputs import InputItem, InputLimits, iter_inputs
from facewarden.adapters.storage.db import erasure_lock, transaction
from facewarden.adapters.storage.tables import Face, FaceCrop, Media, Subject, SubjectRequest
from facewarden.adapters.video import file_sha256
from facewarden.config import Settings
from facewarden.core.actors import Actor
from facewarden.core.binding import crop_aad, template_aad
from facewarden.core.clock import utcnow
from facewarden.core.durations import MAX_DURATION_DAYS
from facewarden.core.errors import InvalidInput, MediaError
from facewarden.core.limits import INGEST_INFLIGHT_BYTES, MAX_WORKERS
from facewarden.core.schemas import IngestSummary, Skipped
from facewarden.services.access import RoleGuard
from facewarden.services.audit import AuditLog
from facewarden.services.index import IndexService
from facewarden.services.keys import KeyService
from facewarden.services.manifest import ManifestEntry, load_manifest
from facewarden.services.models import Models
from facewarden.services.processing import Processed, process_image, process_many_in_worker
from facewarden.services.ray_workers import RayPool
from facewarden.services.sources import SourceService
from facewarden.services.suppression import SuppressionList
from facewarden.services.video import VideoScan, scan_video
from facewarden.services.workers import cores_to_workers, pipeline_pool

ProgressFn = Callable[[int, int, str], None]
SAVE_INDEX_EVERY = 500
STORE_BATCH_IMAGES = 32
"""Images stored per transaction (one commit and one sync of the log for all of them)."""
STORE_BATCH_SECONDS = 0.5
"""... or fewer, when the first of them has waited this long (slow images are not held)."""
INFLIGHT_PER_WORKER = 8
"""Images handed to each worker ahead: enough to keep it busy while a batch is stored."""
CHUNK_IMAGES = 4
"""Images per task handed to a worker process (fewer round trips for small images)..."""
CHUNK_BYTES = 4 << 20
"""... and no more bytes than this per task (large images go one at a time)."""


@dataclass
class _Pending:
    """A processed image waiting in the batch to be stored."""

    path: str
    """The name recorded (``relabel``-ed)."""
    sha: str
    result: Processed
    entry: ManifestEntry | None
    source: str = ""
    """The local path it was read from (progress reports label it themselves)."""


DEDUP_DISTANCE = 0.15
"""Faces of one video track closer than this to a kept face add nothing: not stored."""


def video_processed(scan: VideoScan, per_track: int) -> Processed:
    """The faces a video contributes: each track's best few, near-duplicates dropped."""
    faces = [
        {
            "box": obs.box.as_list(),
            "quality": obs.face.quality.as_dict(),
            "descriptor": obs.face.descriptor.astype("<f4").tobytes(),
            "chip": obs.face.chip_jpeg,
            "time_s": obs.time_s,
            "track": track.track_id,
        }
        for track in scan.tracks
        for obs in sorted(
            track.best(per_track, min_distance=DEDUP_DISTANCE), key=lambda o: o.time_s
        )
    ]
    return Processed(scan.info.width, scan.info.height, faces, scan.rejected, kind="video")


MAX_NOTES = 20
"""Notes kept in an ingest summary (the counts cover every image)."""


def bounded(path: str, result: Processed, summary: IngestSummary, settings: Any) -> None:
    """Count (and note, for the first few) what the per-image bounds left out or reduced."""
    notes = []
    if result.detected_at is not None:
        summary.images_reduced += 1
        w, h = result.detected_at
        notes.append(
            f"{path}: {result.width}x{result.height} detected at {w}x{h} "
            f"(FACEWARDEN_DETECT_MAX_PIXELS {settings.detect_max_pixels}); faces smaller "
            "than about the detector's minimum at that size were not found"
        )
    if result.capped:
        summary.faces_capped += result.capped
        notes.append(
            f"{path}: {len(result.faces) + result.capped} faces detected, the largest "
            f"{settings.max_image_faces} kept, {result.capped} not stored "
            "(FACEWARDEN_MAX_IMAGE_FACES)"
        )
    for note in notes:
        if len(summary.notes) < MAX_NOTES:
            summary.notes.append(note)


def len_of(pool: object, default: int) -> int:
    """Workers of a pool (Ray pools know theirs; process pools have ``default``)."""
    return len(pool) if hasattr(pool, "__len__") else default


# -- worker processes ----------------------------------------------------------------------
def _submit_to(pool: ProcessPoolExecutor, images: list[bytes]) -> Future[list[Processed]]:
    # A function, not ``partial(pool.submit, ...)``: mypy cannot type the latter. The
    # function lives in a light module: a spawned worker imports its module to run it (this
    # one would cost it half a second of SQLAlchemy, Alembic and the services).
    return pool.submit(process_many_in_worker, images)


def _submit_one_to(pool: RayPool, images: list[bytes]) -> Future[list[Processed]]:
    """A Ray actor takes one image at a time; its result as a list of one."""
    (data,) = images
    one = pool.submit(data)
    out: Future[list[Processed]] = Future()
    one.add_done_callback(
        lambda f: (
            out.set_exception(exc)
            if (exc := f.exception()) is not None
            else out.set_result([f.result()])
        )
    )
    return out


class IngestService:
    def __init__(
        self,
        *,
        settings: Settings,
        sessions: sessionmaker[Session],
        writes: sessionmaker[Session],
        audit: AuditLog,
        guard: RoleGuard,
        models: Models,
        index: IndexService,
        keys: KeyService,
        sources: SourceService,
        suppression: SuppressionList,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.writes = writes
        self.audit = audit
        self.guard = guard
        self.models = models
        self.index = index
        self.keys = keys
        self.sources = sources
        self.suppression = suppression
        self._suppressed = np.zeros((0, 128), np.float32)
        self._suppression_mark: int | None = None

    def run(
        self,
        actor: Actor,
        paths: list[Path],
        source: str,
        *,
        workers: int | None = None,
        progress: ProgressFn | None = None,
        relabel: Callable[[str], str] | None = None,
        cancelled: Callable[[], bool] | None = None,
        ray: str | None = None,
        manifest: Path | None = None,
    ) -> IngestSummary:
        """Ingest files, folders and zip archives into ``source``.

        ``ray``: a Ray address (or ``local``) to process images in Ray actors instead of
        local worker processes (``workers`` actors; default one per CPU of the cluster).

        ``relabel`` turns a local path into the name recorded as provenance (uploads are
        stored under a job folder but named as uploaded); ``cancelled`` is polled between
        images and stops the run like Ctrl-C (every stored image stays complete).

        ``manifest``: a CSV or JSON file mapping files to subject references of the source
        system (``services.manifest``); the one face of each listed file is linked to its
        subject (a file with several faces or none is reported, not linked)."""
        label = relabel or str
        if workers is not None and not 1 <= workers <= MAX_WORKERS:
            raise InvalidInput(f"workers must be between 1 and {MAX_WORKERS}")
        self.guard.authorize(actor, "ingest", "operator", details={"source": source})
        self.index.check_template_space()
        with self.sessions() as session:
            src = self.sources.get(session, source)
            retention = timedelta(days=min(max(src.retention_days, 0.0), MAX_DURATION_DAYS))
            source_id, basis, purpose = src.id, src.lawful_basis, src.purpose
            index_label = FaceLabel(src.name, src.jurisdiction)
            allowed = list(src.subject_fields or [])
        settings = self.settings
        limits = InputLimits(
            settings.max_file_bytes,
            settings.max_archive_ratio,
            settings.max_video_bytes,
            settings.max_archive_members,
            settings.max_archive_bytes,
        )
        items = list(iter_inputs(paths, limits))
        entries = load_manifest(manifest, allowed) if manifest is not None else None
        if entries is not None:
            listed = {Path(i.path).resolve() for i in items if "!" not in i.path}
            absent = sorted(str(p) for p in entries if p not in listed)
            if absent:
                raise InvalidInput(
                    f"the manifest names {len(absent)} file(s) not among the inputs: "
                    + ", ".join(absent[:5])
                )
        summary = IngestSummary(source=source, detector=settings.ingest_detector_setting)
        run_started = time.perf_counter()
        if entries is not None:
            summary.subjects = {"linked_faces": 0, "subjects": 0, "not_linked": []}

        def subject_of(path: str) -> ManifestEntry | None:
            if entries is None or "!" in path:
                return None
            return entries.get(Path(path).resolve())

        self.audit.record(
            actor,
            "ingest.start",
            legal_basis=basis,
            purpose=purpose,
            model_id=self.models.model_id,
            details={
                "source": source,
                "paths": [label(str(p)) for p in paths],
                "items": len(items),
                "detector": settings.ingest_detector_setting,
            }
            | (
                {"video_detector": settings.detector_setting}
                if any(item.video is not None for item in items)
                else {}
            )
            | ({"ray": ray} if ray else {}),
        )
        done = 0

        def tick(path: str) -> None:
            nonlocal done
            done += 1
            if progress:
                progress(done, len(items), label(path))

        def skip(path: str, exc: MediaError) -> None:
            summary.skipped.append(Skipped(label(path), exc.message, exc.code))
            tick(path)

        seen: set[str] = set()
        copies: dict[str, list[str]] = {}
        """Content met again in this run: sha256 -> the paths of its later copies."""
        refused: dict[str, MediaError] = {}
        """Content refused in this run (its copies are reported with the same reason)."""

        def pending() -> Iterator[tuple[str, str, bytes]]:
            for item in items:
                if item.video is not None:
                    continue
                if cancelled is not None and cancelled():
                    raise KeyboardInterrupt
                loaded = self._load(item, seen)
                if isinstance(loaded, MediaError):
                    skip(item.path, loaded)
                elif isinstance(loaded, str):
                    copies.setdefault(loaded, []).append(item.path)
                    summary.duplicates += 1
                    tick(item.path)
                else:
                    yield item.path, *loaded

        batch: list[_Pending] = []
        batch_started = 0.0

        def flush() -> None:
            """Store the images waiting in ``batch``: one transaction for all of them."""
            if not batch:
                return
            before = summary.images
            self._store_batch(source_id, index_label, retention, batch, summary)
            for pending_item in batch:
                tick(pending_item.source)
            batch.clear()
            if summary.images // SAVE_INDEX_EVERY != before // SAVE_INDEX_EVERY:
                started = time.perf_counter()
                self.index.save()
                summary.seconds["index"] += time.perf_counter() - started

        def store(path: str, sha: str, result: Processed) -> None:
            nonlocal batch_started
            if result.error_code:
                error = MediaError(result.error or "unreadable", code=result.error_code)
                refused[sha] = error
                skip(path, error)
                return
            bounded(label(path), result, summary, settings)
            if not batch:
                batch_started = time.perf_counter()
            batch.append(_Pending(label(path), sha, result, subject_of(path), path))
            if (
                len(batch) >= STORE_BATCH_IMAGES
                or result.kind == "video"
                or time.perf_counter() - batch_started >= STORE_BATCH_SECONDS
            ):
                flush()

        def ingest_video(item: InputItem) -> None:
            assert item.video is not None
            try:
                sha = file_sha256(item.video)
            except OSError as exc:
                skip(item.path, MediaError(f"cannot read file: {exc}", code="unreadable"))
                return
            if not self._is_new(sha, seen):
                summary.duplicates += 1
                tick(item.path)
                return

            def video_progress(t: float, duration: float | None) -> None:
                if progress:
                    where = f"{t:.0f}/{duration:.0f} s" if duration else f"{t:.0f} s"
                    progress(done, len(items), f"{label(item.path)} {where}")

            try:
                scan = scan_video(
                    item.video,
                    self.models.pipeline,
                    settings,
                    workers=n_workers,
                    enrol=True,
                    progress=video_progress,
                    cancelled=cancelled,
                )
            except MediaError as exc:
                skip(item.path, exc)
                return
            if scan.partial:
                summary.partial.append(Skipped(label(item.path), scan.partial, "partial"))
            store(item.path, sha, video_processed(scan, settings.video_faces_per_track))

        # Never more worker processes than images: each loads the models (a one-image
        # ingest runs in this process, with no pool to start).
        images = sum(1 for item in items if item.video is None and item.error is None)
        n_workers = min(workers or settings.workers, max(images, 1))
        failure: BaseException | None = None
        try:
            if n_workers <= 1 and ray is None:
                for path, sha, data in pending():
                    store(
                        path,
                        sha,
                        process_image(self.models.ingest_pipeline, data, settings.max_image_pixels),
                    )
            else:
                with cores_to_workers():
                    self._run_pool(
                        n_workers,
                        pending(),
                        store,
                        ray,
                        ray_actors=workers,
                        images=images,
                        cancelled=cancelled,
                    )
                    flush()
            flush()
            for item in items:
                if item.video is not None:
                    if cancelled is not None and cancelled():
                        raise KeyboardInterrupt
                    ingest_video(item)
        except KeyboardInterrupt:
            summary.interrupted = True
            flush()  # what was processed before the interruption is kept
        except BaseException as exc:
            failure = exc
            raise
        finally:
            # A copy of refused content is not a duplicate of anything stored: it is
            # reported as skipped, for the same reason, like the first copy.
            for sha, error in refused.items():
                for path in copies.get(sha, []):
                    summary.duplicates -= 1
                    summary.skipped.append(
                        Skipped(
                            label(path),
                            f"{error.message} (same content as another file)",
                            error.code,
                        )
                    )
            summary.elapsed_s = time.perf_counter() - run_started
            self.index.save()
            outcome = "failed" if failure else "interrupted" if summary.interrupted else "ok"
            try:
                self.audit.record(
                    actor,
                    "ingest.finish",
                    outcome=outcome,
                    error=f"{type(failure).__name__}: {failure}" if failure else None,
                    legal_basis=basis,
                    purpose=purpose,
                    model_id=self.models.model_id,
                    gallery_size=len(self.index.vectors),
                    details={
                        k: v
                        for k, v in summary.as_dict().items()
                        if k not in ("skipped", "subjects", "notes")
                    }
                    | {"skipped": len(summary.skipped)}
                    | (
                        {
                            "manifest": label(str(manifest)),
                            "subjects": summary.subjects
                            | {"not_linked": len(summary.subjects["not_linked"])},
                        }
                        if summary.subjects is not None and manifest is not None
                        else {}
                    ),
                )
            except Exception:
                # The failure (a full disk) may forbid this record too: the original error
                # is what the caller must see. It is never recorded as "ok".
                if failure is None:
                    raise
        return summary

    def _run_pool(
        self,
        n_workers: int,
        jobs: Iterator[tuple[str, str, bytes]],
        store: Callable[[str, str, Processed], None],
        ray: str | None = None,
        ray_actors: int | None = None,
        images: int = 0,
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        """Process ``jobs`` in worker processes, or in Ray actors when ``ray`` is an address
        (``ray_actors`` of them; default one per CPU of the cluster); store each result here,
        in the order they finish. Worker processes get small images a few at a time (fewer
        round trips), never so many that a worker would sit idle at the end of ``images``."""
        pool: RayPool | ProcessPoolExecutor
        submit: Callable[[list[bytes]], Future[list[Processed]]]
        if ray is not None:
            ray_pool = RayPool(ray, self.settings, ray_actors)
            pool, chunk = ray_pool, 1
            submit = functools.partial(_submit_one_to, ray_pool)
        else:
            pool = pipeline_pool(n_workers, self.settings, ingest=True)
            chunk = max(1, min(CHUNK_IMAGES, images // (n_workers * INFLIGHT_PER_WORKER)))
            submit = functools.partial(_submit_to, pool)
        in_flight: dict[Future, list[tuple[str, str, int]]] = {}
        queued = 0  # images handed to the workers and not yet back
        held = 0  # their encoded bytes
        with pool:
            try:
                exhausted = False
                while True:
                    # At most INFLIGHT_PER_WORKER images per worker (they keep working while
                    # this thread stores a batch), and no more than INGEST_INFLIGHT_BYTES
                    # of them (always at least one): memory stays flat whatever the input.
                    while (
                        not exhausted
                        and queued < INFLIGHT_PER_WORKER * len_of(pool, n_workers)
                        and (not in_flight or held < INGEST_INFLIGHT_BYTES)
                    ):
                        group: list[tuple[str, str, bytes]] = []
                        size = 0
                        while len(group) < chunk and size < CHUNK_BYTES:
                            job = next(jobs, None)
                            if job is None:
                                exhausted = True
                                break
                            group.append(job)
                            size += len(job[2])
                        if not group:
                            break
                        future = submit([data for _, _, data in group])
                        in_flight[future] = [(path, sha, len(data)) for path, sha, data in group]
                        queued += len(group)
                        held += size
                    if not in_flight:
                        break
                    finished, _ = wait(in_flight, timeout=0.5, return_when=FIRST_COMPLETED)
                    if cancelled is not None and cancelled():
                        raise KeyboardInterrupt  # stored so far is kept (the caller flushes)
                    for fut in finished:
                        group_info = in_flight.pop(fut)
                        queued -= len(group_info)
                        held -= sum(size for _, _, size in group_info)
                        for (path, sha, _), result in zip(group_info, fut.result(), strict=True):
                            store(path, sha, result)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise

    def _load(self, item: InputItem, seen: set[str]) -> tuple[str, bytes] | MediaError | str:
        """(sha256, bytes) to process, a MediaError, or the sha256 alone when this content
        was met earlier in the run or is already stored."""
        if item.error is not None:
            return item.error
        assert item.read is not None
        try:
            data = item.read()
        except MediaError as exc:
            return exc
        except OSError as exc:
            return MediaError(f"cannot read file: {exc}", code="unreadable")
        sha = hashlib.sha256(data).hexdigest()
        return (sha, data) if self._is_new(sha, seen) else sha

    def _is_new(self, sha: str, seen: set[str]) -> bool:
        """False when this content was met earlier in the run or is already stored."""
        if sha in seen:
            return False
        seen.add(sha)
        with self.sessions() as session:
            return session.scalar(select(Media.id).where(Media.sha256 == sha)) is None

    def _subject(
        self, session, source_id: int, entry: ManifestEntry, summary: IngestSummary
    ) -> int:
        """The id of the source's subject ``entry.subject`` (created, or its metadata
        completed, in the caller's transaction)."""
        q = select(Subject).where(
            Subject.source_id == source_id, Subject.reference == entry.subject
        )
        subject = session.scalar(q)
        if subject is None:
            try:
                with session.begin_nested():
                    subject = Subject(
                        source_id=source_id,
                        reference=entry.subject,
                        fields=dict(entry.fields),
                        created_at=utcnow(),
                        restricted=False,
                    )
                    session.add(subject)
                    session.flush()
                if summary.subjects is not None:
                    summary.subjects["subjects"] += 1
            except IntegrityError:  # another ingest created it meanwhile
                subject = session.scalar(q)
        elif entry.fields and any(subject.fields.get(k) != v for k, v in entry.fields.items()):
            subject.fields = dict(subject.fields) | entry.fields
        return subject.id

    def _refresh_suppression(self, session) -> None:
        """Reload the suppression list if an erasure has added to it since the last load."""
        mark = session.scalar(
            select(func.max(SubjectRequest.id)).where(
                SubjectRequest.suppression_template.is_not(None)
            )
        )
        if mark != self._suppression_mark:
            self._suppressed = self.suppression.templates()
            self._suppression_mark = mark

    def _not_suppressed(self, faces: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
        """(position, face) of each face that is not on the erasure suppression list."""
        sup = self._suppressed
        if not len(sup):
            return list(enumerate(faces))
        limit = self.settings.subject_threshold
        kept = []
        for i, face in enumerate(faces):
            vec = np.frombuffer(face["descriptor"], dtype="<f4")
            if float(np.min(np.linalg.norm(sup - vec, axis=1))) > limit:
                kept.append((i, face))
        return kept

    def _store_batch(
        self,
        source_id: int,
        index_label: FaceLabel,
        retention: timedelta,
        batch: list[_Pending],
        summary: IngestSummary,
    ) -> None:
        """Store a batch of processed images in one transaction (one commit, one sync of the
        log, instead of one per image), each image in a savepoint of its own: content stored
        meanwhile by another ingest, or an image holding only erased people, leaves the
        others stored. A crash before the commit stores none of the batch (a re-run stores
        it: ingest is idempotent by content hash); never part of an image."""
        now = utcnow()
        started = time.perf_counter()
        stored: list[tuple[_Pending, list[Any], list[tuple[int, dict[str, Any]]], int | None]] = []
        duplicates = suppressed = 0
        try:
            with transaction(self.writes) as session:
                # Under the erasure lock, an erasure committed before this write (during
                # this run too) is on the suppression list, and none is half done.
                erasure_lock(session, shared=True)
                cipher = self.keys.writing(session)
                self._refresh_suppression(session)
                for item in batch:
                    result = item.result
                    kept = self._not_suppressed(result.faces)
                    if result.faces and not kept:
                        # Only erased people in this image: keep no trace of it, not even
                        # the record.
                        suppressed += len(result.faces)
                        continue
                    try:
                        with session.begin_nested():
                            subject_id = None
                            if item.entry is not None and len(kept) == 1:
                                subject_id = self._subject(session, source_id, item.entry, summary)
                            new_faces = self._add_media(
                                session,
                                cipher,
                                source_id,
                                retention,
                                now,
                                item,
                                kept,
                                subject_id,
                            )
                    except IntegrityError:
                        # Another ingest stored the same content meanwhile: idempotent,
                        # not an error.
                        duplicates += 1
                        continue
                    stored.append((item, new_faces, kept, subject_id))
        finally:
            summary.seconds["store"] += time.perf_counter() - started
        summary.duplicates += duplicates
        summary.faces_suppressed += suppressed
        index_started = time.perf_counter()
        ids: list[int] = []
        vectors: list[np.ndarray] = []
        for item, new_faces, kept, subject_id in stored:
            result = item.result
            if result.kind == "video":
                summary.videos += 1
            else:
                summary.images += 1
                summary.images_without_face += not new_faces
            summary.faces += len(new_faces)
            entry = item.entry
            if entry is not None and summary.subjects is not None:
                if subject_id is not None:
                    summary.subjects["linked_faces"] += 1
                else:
                    summary.subjects["not_linked"].append(
                        {
                            "path": item.path,
                            "subject": entry.subject,
                            "reason": f"{len(kept)} faces stored: a subject is linked to a "
                            "file's only face",
                        }
                    )
            summary.faces_suppressed += len(result.faces) - len(kept)
            summary.faces_rejected += result.rejected
            for row, vec in new_faces:
                ids.append(row.id)
                vectors.append(vec)
        if ids:
            self.index.vectors.add(
                np.array(ids, dtype=np.int64), np.stack(vectors), [index_label] * len(ids)
            )
            summary.seconds["index"] += time.perf_counter() - index_started

    def _add_media(
        self,
        session: Session,
        cipher: Any,
        source_id: int,
        retention: timedelta,
        now: Any,
        item: _Pending,
        kept: list[tuple[int, dict[str, Any]]],
        subject_id: int | None,
    ) -> list[tuple[Face, np.ndarray]]:
        """One image's media row, faces (encrypted templates) and crops, in ``session``."""
        result, sha = item.result, item.sha
        media = Media(
            source_id=source_id,
            sha256=sha,
            path=item.path,
            kind=result.kind,
            width=result.width,
            height=result.height,
            ingested_at=now,
            expires_at=now + retention,
            restricted=False,
        )
        session.add(media)
        session.flush()
        new_faces = []
        for i, face in kept:
            top, right, bottom, left = face["box"]
            vec = np.frombuffer(face["descriptor"], dtype="<f4")
            row = Face(
                media_id=media.id,
                face_index=i,
                top=top,
                right=right,
                bottom=bottom,
                left=left,
                quality=face["quality"],
                model_id=self.models.model_id,
                key_id=cipher.key_id,
                template=cipher.encrypt_template(vec, template_aad(sha, i)),
                time_s=face.get("time_s"),
                track=face.get("track"),
                subject_id=subject_id,
            )
            session.add(row)
            new_faces.append((row, vec))
        session.flush()
        for (row, _), (_, face) in zip(new_faces, kept, strict=True):
            if face["chip"]:
                session.add(
                    FaceCrop(
                        face_id=row.id,
                        data=cipher.encrypt(face["chip"], crop_aad(sha, row.face_index)),
                        key_id=cipher.key_id,
                    )
                )
        session.flush()
        return new_faces
