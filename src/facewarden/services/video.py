"""Video: sample frames, detect and embed faces, link them into tracks; search by track.

Decoding streams frame by frame (PyAV); the sampled frames go through the face pipeline in
this process or, with ``workers > 1``, in worker processes (a bounded number in flight, so
memory stays flat however long the video). Tracks, not frames, are searched: the best few
faces of each track, merged per gallery face.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facewarden.adapters.imaging import IMAGE_HINT, looks_like_image
from facewarden.adapters.index.base import IndexFilter
from facewarden.adapters.video import VideoFrame, VideoInfo, VideoReader, file_sha256
from facewarden.calibration import for_model
from facewarden.config import Settings
from facewarden.core.actors import Actor
from facewarden.core.errors import FacewardenError, InvalidInput, MediaError, NoFaceFound, Refused
from facewarden.core.filters import SearchFilter
from facewarden.core.limits import MAX_TOP_K
from facewarden.core.pipeline import FacePipeline, PipelineOutput
from facewarden.core.schemas import Candidate, FaceMatches, TrackMatches, VideoSearchResult
from facewarden.core.tracking import FaceTracker, Track, build_timeline
from facewarden.services.access import RoleGuard
from facewarden.services.audit import AuditLog
from facewarden.services.cases import CaseService
from facewarden.services.models import Models
from facewarden.services.search import SearchService, annotate
from facewarden.services.workers import WORKER, pipeline_pool

VideoProgress = Callable[[float, float | None], None]
"""Called with (seconds of video processed, declared duration or None)."""

FRAMES_PER_TRACK_SEARCH = 3
"""A track is searched with its best few faces; more adds time, rarely a candidate."""


@dataclass
class VideoScan:
    info: VideoInfo
    sample_fps: float
    frames_sampled: int
    frames_decoded: int
    detections: int
    rejected: int
    """Detections below the enrolment size floor (``enrol=True``), counted per frame."""
    tracks: list[Track]
    partial: str | None
    gap_s: float

    def summary(self) -> dict[str, Any]:
        return self.info.as_dict() | {
            "sample_fps": self.sample_fps,
            "frames_decoded": self.frames_decoded,
            "frames_sampled": self.frames_sampled,
            "detections": self.detections,
            "tracks": len(self.tracks),
        }


def _worker_frame(image: np.ndarray, enrol: bool) -> PipelineOutput:
    return WORKER["pipeline"].process(image, enrol=enrol)


def _processed(
    frames: Iterator[VideoFrame],
    pipeline: FacePipeline,
    settings: Settings,
    workers: int,
    enrol: bool,
) -> Iterator[tuple[VideoFrame, PipelineOutput]]:
    """Each frame with its faces, in order; in worker processes when ``workers > 1``."""
    if workers <= 1:
        for frame in frames:
            yield frame, pipeline.process(frame.image, enrol=enrol)
        return
    with pipeline_pool(workers, settings) as pool:
        in_flight: deque[tuple[VideoFrame, Future]] = deque()
        try:
            for frame in frames:
                in_flight.append((frame, pool.submit(_worker_frame, frame.image, enrol)))
                if len(in_flight) >= 2 * workers:
                    done, fut = in_flight.popleft()
                    yield done, fut.result()
            while in_flight:
                done, fut = in_flight.popleft()
                yield done, fut.result()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def scan_video(
    path: Path,
    pipeline: FacePipeline,
    settings: Settings,
    *,
    fps: float | None = None,
    workers: int | None = None,
    enrol: bool = False,
    progress: VideoProgress | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> VideoScan:
    """Faces of a video linked into tracks. Raises :class:`MediaError` for files that
    cannot be read at all; a damaged file returns what came before the damage (``partial``)."""
    fps = fps or settings.video_fps
    gap = max(1.0, 2.5 / fps)
    tracker = FaceTracker(max_gap_s=gap)
    sampled = rejected = 0
    with VideoReader(path, max_pixels=settings.max_image_pixels) as reader:
        duration = reader.info.duration_s
        frames = reader.frames(fps)
        for frame, out in _processed(
            frames, pipeline, settings, workers or settings.workers, enrol
        ):
            if cancelled is not None and cancelled():
                raise KeyboardInterrupt
            tracker.update(round(frame.time_s, 3), out.faces)
            sampled += 1
            rejected += out.rejected
            if progress:
                progress(frame.time_s, duration)
        if progress:
            progress(reader.last_time_s, duration)
        return VideoScan(
            reader.info,
            fps,
            sampled,
            reader.decoded,
            tracker.detections,
            rejected,
            tracker.tracks,
            reader.partial,
            gap,
        )


class VideoSearchService:
    """``search`` for videos: one logged search per video, one probe face per track."""

    def __init__(
        self,
        *,
        settings: Settings,
        audit: AuditLog,
        guard: RoleGuard,
        models: Models,
        search_service: SearchService,
        cases: CaseService,
    ) -> None:
        self.settings = settings
        self.audit = audit
        self.guard = guard
        self.models = models
        self.search_service = search_service
        self.cases = cases

    def search(
        self,
        actor: Actor,
        path: Path,
        *,
        case: str | None,
        probe_name: str | None = None,
        fps: float | None = None,
        top_k: int | None = None,
        threshold: float | None = None,
        workers: int | None = None,
        progress: VideoProgress | None = None,
        cancelled: Callable[[], bool] | None = None,
        allow_low_quality: bool = False,
        where: SearchFilter | None = None,
    ) -> VideoSearchResult:
        """Search each face track whose best face meets the probe quality bar (all of them
        with ``allow_low_quality``, logged); a video with no usable track is refused without
        using the case's quota. ``where`` limits candidates as in a photo search."""
        top_k = self.settings.top_k if top_k is None else top_k
        requested = threshold
        threshold = self.settings.threshold if threshold is None else threshold
        if not 0 < threshold <= 2 or not 1 <= top_k <= MAX_TOP_K:
            raise InvalidInput(f"threshold must be in (0, 2] and top-k in 1..{MAX_TOP_K}")
        if fps is not None and not 0 < fps <= 60:
            raise InvalidInput("fps must be in (0, 60]")
        try:
            probe_hash = file_sha256(path)
        except OSError as exc:
            raise InvalidInput(f"cannot read {path}: {exc.strerror}") from exc
        probe_name = probe_name or str(path)
        audit: dict[str, Any] = {
            "probe_hash": probe_hash,
            "threshold": threshold,
            "model_id": self.models.model_id,
        }
        self.guard.authorize(actor, "search", "investigator", case_ref=case, **audit)
        info = self.cases.require_usable(actor, case, "search", **audit)
        audit |= {"case_ref": info.ref, "legal_basis": info.legal_basis, "purpose": info.purpose}
        try:
            threshold, policy = self.search_service.threshold_policy(info, requested)
        except FacewardenError as exc:
            outcome = "refused" if isinstance(exc, Refused) else "error"
            self.audit.record(actor, "search", outcome=outcome, error=exc.message, **audit)
            raise
        audit["threshold"] = threshold
        try:
            index_filter = self.search_service.index_filter(where)
            with path.open("rb") as fh:
                head = fh.read(1 << 16)
            if looks_like_image(head):
                # Refused before any frame is read: no search is recorded, no quota is used.
                raise MediaError(IMAGE_HINT, code="image_not_video")
            scan = scan_video(
                path,
                self.models.pipeline,
                self.settings,
                fps=fps,
                workers=workers,
                progress=progress,
                cancelled=cancelled,
            )
            if not scan.tracks:
                raise NoFaceFound("no face found in the probe video")
            tracks = [
                self._search_track(t, top_k, threshold, allow_low_quality, index_filter)
                for t in scan.tracks
            ]
            problems = [t.quality_problems for t in tracks]
            if not any(t.searched for t in tracks):
                why = "; ".join(
                    f"track {t.track_id}: {', '.join(t.quality_problems)}" for t in tracks
                )
                self.audit.record(
                    actor,
                    "search",
                    outcome="refused",
                    error=f"low_quality_probe: {why}",
                    details={"quality_problems": problems},
                    **audit,
                )
                raise Refused(
                    f"search refused: no face track meets the quality bar ({why}); "
                    "override explicitly (--allow-low-quality, logged)",
                    code="low_quality_probe",
                )
        except FacewardenError as exc:
            if exc.code != "low_quality_probe":
                self.audit.record(actor, "search", outcome="error", error=exc.message, **audit)
            raise
        except KeyboardInterrupt:
            self.audit.record(actor, "search", outcome="error", error="cancelled", **audit)
            raise
        matches = [
            FaceMatches(
                t.box,
                t.quality,
                t.candidates,
                quality_problems=t.quality_problems,
                searched=t.searched,
            )
            for t in tracks
        ]
        templates = [max(t.observations, key=lambda o: o.score).face for t in scan.tracks]
        summary = scan.summary()
        extra: dict[str, Any] = {
            "threshold_policy": policy,
            "detector": self.settings.detector_setting,
            "video": summary,
            "partial": scan.partial,
            "tracks": [
                {"track_id": t.track_id, "start_s": t.start_s, "end_s": t.end_s} for t in tracks
            ],
        }
        if where is not None:
            extra["filter"] = where.as_dict()
        if any(problems):
            extra["quality_problems"] = problems
            extra["allow_low_quality"] = allow_low_quality
        search_id, size, seq = self.search_service.record(
            actor,
            info.ref,
            probe_name,
            probe_hash,
            templates,
            matches,
            top_k,
            audit,
            extra,
            probe_crops=[t.thumbnail_jpeg if t.searched else None for t in tracks],
            probe_times=[t.best_frame_s for t in tracks],
        )
        annotate(for_model(self.models.model_id), matches, threshold, size)
        for t, m in zip(tracks, matches, strict=True):
            t.expected_false_candidates = m.expected_false_candidates
        return VideoSearchResult(
            probe=probe_name,
            probe_sha256=probe_hash,
            case=info.ref,
            threshold=threshold,
            gallery_size=size,
            model=self.models.model_id,
            detector=self.settings.detector_setting,
            video=summary,
            tracks=tracks,
            timeline=build_timeline(tracks, scan.gap_s),
            partial=scan.partial,
            audit_seq=seq,
            search_id=search_id,
            threshold_policy=policy,
        )

    def _search_track(
        self,
        track: Track,
        top_k: int,
        threshold: float,
        allow_low_quality: bool = False,
        where: IndexFilter | None = None,
    ) -> TrackMatches:
        """Search the track's best faces; each gallery face keeps its smallest distance.
        A track whose best face is below the quality bar is searched only by override."""
        best = track.best(FRAMES_PER_TRACK_SEARCH, min_distance=0.05)
        problems = self.search_service.quality_problems(best[0].face.quality)
        searched = allow_low_quality or not problems
        merged: dict[int, Candidate] = {}
        for obs in best if searched else []:
            for cand in self.search_service.match(
                obs.face, top_k, threshold, where=where
            ).candidates:
                known = merged.get(cand.face_id)
                if known is None or cand.distance < known.distance:
                    merged[cand.face_id] = cand
        ranked = sorted(merged.values(), key=lambda c: (c.distance, c.face_id))[:top_k]
        for rank, cand in enumerate(ranked, 1):
            cand.rank = rank
        top = best[0]
        return TrackMatches(
            track_id=track.track_id,
            start_s=track.start_s,
            end_s=track.end_s,
            best_frame_s=top.time_s,
            box=top.box.as_list(),
            quality=top.face.quality.as_dict(),
            detections=len(track.observations),
            candidates=ranked,
            thumbnail_jpeg=top.face.chip_jpeg,
            quality_problems=problems,
            searched=searched,
        )
