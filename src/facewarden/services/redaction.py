"""Redaction for disclosure: a copy of an image or video with every face blurred except
the faces of named gallery people.

Fail-safe by design: a face is kept only when it matches a kept gallery face; everything
else the detector finds is blurred. In videos, each frame is detected again and the boxes
of blurred tracks are carried across the frames between samples, so a face missed in one
frame is still covered.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
from PIL import Image, ImageFilter
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from facewarden.adapters.imaging import IMAGE_SUFFIXES, decode_image
from facewarden.adapters.storage.tables import Case, CaseSearch, Face, Media, SearchHit
from facewarden.adapters.video import VideoReader, file_sha256
from facewarden.config import Settings
from facewarden.core.actors import Actor
from facewarden.core.binding import template_aad
from facewarden.core.errors import FacewardenError, InvalidInput, Refused
from facewarden.core.media import is_video_path
from facewarden.core.schemas import Box
from facewarden.core.tracking import Track, iou
from facewarden.services.access import RoleGuard
from facewarden.services.audit import AuditLog
from facewarden.services.cases import CaseService
from facewarden.services.keyring import Keyring
from facewarden.services.models import Models
from facewarden.services.video import VideoProgress, scan_video

REDACTORS = ("investigator", "dpo")
MARGIN = 0.25
"""Blurred regions extend this fraction of the box size beyond the detector's box."""


def blur_box(image: Image.Image, box: Box) -> None:
    """Pixelate then blur one face region in place (not reversible by sharpening)."""
    w, h = box.width, box.height
    left = max(0, int(box.left - MARGIN * w))
    top = max(0, int(box.top - MARGIN * h))
    right = min(image.width, int(box.right + MARGIN * w))
    bottom = min(image.height, int(box.bottom + MARGIN * h))
    if right - left < 2 or bottom - top < 2:
        return
    region = image.crop((left, top, right, bottom))
    small = region.resize((6, 6), Image.Resampling.BILINEAR)
    coarse = small.resize(region.size, Image.Resampling.NEAREST)
    image.paste(coarse.filter(ImageFilter.GaussianBlur(max(4, (right - left) // 8))), (left, top))


def _box_at(track: Track, t: float, reach: float) -> Box | None:
    """The track's box at time ``t``: interpolated between samples, held for ``reach``
    seconds beyond its ends; None when the track is not on screen."""
    obs = track.observations
    if t < obs[0].time_s - reach or t > obs[-1].time_s + reach:
        return None
    if t <= obs[0].time_s:
        return obs[0].box
    for a, b in itertools.pairwise(obs):
        if a.time_s <= t <= b.time_s:
            if b.time_s - a.time_s > 2 * reach:  # a gap: hold each end for ``reach``
                near = a if t - a.time_s <= b.time_s - t else b
                return near.box if abs(t - near.time_s) <= reach else None
            f = (t - a.time_s) / max(b.time_s - a.time_s, 1e-6)
            va, vb = np.array(a.box.as_list()), np.array(b.box.as_list())
            return Box(*(round(float(x)) for x in va + f * (vb - va)))
    return obs[-1].box


@dataclass
class RedactionReport:
    input: str
    input_sha256: str
    output: str
    output_sha256: str
    kind: str
    kept_face_ids: list[int]
    faces_kept: int
    faces_blurred: int
    frames: int = 1
    tracks: list[dict[str, Any]] = field(default_factory=list)
    partial: str | None = None
    regions_blurred: int = 0
    """Face regions blurred over all frames (a video) or faces blurred (an image)."""

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


class RedactionService:
    def __init__(
        self,
        *,
        settings: Settings,
        sessions: sessionmaker[Session],
        audit: AuditLog,
        guard: RoleGuard,
        keyring: Keyring,
        models: Models,
        cases: CaseService,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.audit = audit
        self.guard = guard
        self.keyring = keyring
        self.models = models
        self.cases = cases

    def redact(
        self,
        actor: Actor,
        source: Path,
        keep: list[int],
        out: Path,
        *,
        case: str | None = None,
        progress: VideoProgress | None = None,
    ) -> RedactionReport:
        """Write ``out``: ``source`` with every face blurred except those matching the
        gallery faces ``keep`` (within the search threshold)."""
        fields = {"case_ref": case, "details": {"input": str(source), "keep": keep}}
        self.guard.authorize(actor, "redact", *REDACTORS, **fields)
        video = is_video_path(source)
        if video != is_video_path(out) or (not video and out.suffix.lower() not in IMAGE_SUFFIXES):
            raise InvalidInput("the output must be of the same kind (image or video) as the input")
        if out.resolve() == source.resolve():
            raise InvalidInput("the output must not overwrite the input")
        if not actor.has("dpo"):
            # Comparing faces with gallery faces is a search: an open case the investigator
            # is assigned to, and only faces that case's searches returned (restricted
            # media never), so a redaction cannot be used as an unlogged 1:N membership test.
            info = self.cases.require_usable(actor, case, "redact", details=fields["details"])
            self._check_keep(actor, info.ref, keep, fields)
        kept = self._kept_templates(keep)
        try:
            if video:
                report = self._video(source, kept, out, progress)
            else:
                report = self._image(source, kept, out)
        except FacewardenError as exc:
            self.audit.record(actor, "redact", outcome="error", error=exc.message, **fields)
            raise
        report.kept_face_ids = keep
        self.audit.record(
            actor,
            "redact",
            case_ref=case,
            probe_hash=report.input_sha256,
            details={k: v for k, v in report.as_dict().items() if k != "tracks"},
        )
        return report

    def _check_keep(self, actor: Actor, ref: str, keep: list[int], fields: dict[str, Any]) -> None:
        """Refuse (logged) kept faces that are not candidates of the case, or restricted."""
        with self.sessions() as session:
            candidates = set(
                session.scalars(
                    select(SearchHit.face_id)
                    .join(CaseSearch, CaseSearch.id == SearchHit.search_id)
                    .join(Case, Case.id == CaseSearch.case_id)
                    .where(Case.ref == ref, SearchHit.face_id.in_(keep))
                )
            )
            restricted = set(
                session.scalars(
                    select(Face.id)
                    .join(Media, Media.id == Face.media_id)
                    .where(Face.id.in_(keep), Media.restricted.is_(True))
                )
            )
        wrong = sorted((set(keep) - candidates) | restricted)
        if wrong:
            problem = (
                f"redact refused: faces {', '.join(map(str, wrong))} are not candidates of "
                f"case {ref} (or belong to restricted media)"
            )
            self.audit.record(
                actor, "redact", outcome="refused", error=problem, **(fields | {"case_ref": ref})
            )
            raise Refused(problem, code="not_a_case_candidate")

    def _kept_templates(self, keep: list[int]) -> np.ndarray:

        with self.sessions() as session:
            rows = session.execute(
                select(Face, Media.sha256)
                .join(Media, Media.id == Face.media_id)
                .where(Face.id.in_(keep))
            ).all()
        missing = sorted(set(keep) - {f.id for f, _ in rows})
        if missing:
            raise InvalidInput(f"no such gallery face: {', '.join(map(str, missing))}")
        vecs = [
            self.keyring.cipher.decrypt_template(
                f.template, template_aad(sha, f.face_index), f.key_id
            )
            for f, sha in rows
        ]
        return np.stack(vecs) if vecs else np.zeros((0, 128), np.float32)

    def _matches(self, kept: np.ndarray, descriptors: list[np.ndarray]) -> bool:
        if not len(kept) or not descriptors:
            return False
        d = np.linalg.norm(kept[None, :, :] - np.stack(descriptors)[:, None, :], axis=2)
        return bool(d.min() <= self.settings.threshold)

    def _image(self, source: Path, kept: np.ndarray, out: Path) -> RedactionReport:
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise InvalidInput(f"cannot read {source}: {exc.strerror}") from exc
        array = decode_image(data, max_pixels=self.settings.max_image_pixels)
        faces = self.models.pipeline.process(array, enrol=False).faces
        image = Image.fromarray(array)
        blurred = 0
        for face in faces:
            if not self._matches(kept, [face.descriptor]):
                blur_box(image, face.detection.box)
                blurred += 1
        tmp = out.with_name(f".{out.name}.part")
        fmt = Image.registered_extensions().get(out.suffix.lower(), "PNG")
        image.save(tmp, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
        os.replace(tmp, out)  # no metadata (EXIF, GPS) is carried over
        return RedactionReport(
            str(source),
            hashlib.sha256(data).hexdigest(),
            str(out),
            file_sha256(out),
            "image",
            [],
            len(faces) - blurred,
            blurred,
            regions_blurred=blurred,
        )

    def _video(
        self, source: Path, kept: np.ndarray, out: Path, progress: VideoProgress | None
    ) -> RedactionReport:
        settings = self.settings
        scan = scan_video(source, self.models.pipeline, settings, progress=progress)
        keep_track = {
            t.track_id: self._matches(kept, [o.face.descriptor for o in t.observations])
            for t in scan.tracks
        }
        reach = 1.0 / scan.sample_fps
        tmp = out.with_name(f".{out.name}.part{out.suffix}")
        frames = blurred_regions = 0
        with VideoReader(source, max_pixels=settings.max_image_pixels) as reader:
            info = reader.info
            width, height = info.width - info.width % 2, info.height - info.height % 2
            with av.open(str(tmp), mode="w") as container:
                codec: Literal["libx264", "mpeg4"] = (
                    "libx264" if "libx264" in av.codecs_available else "mpeg4"
                )
                rate = Fraction(info.frame_rate or 25).limit_denominator(1001)
                stream = container.add_stream(codec, rate=rate)
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                stream.codec_context.time_base = Fraction(1, 1000)  # pts in ms: keeps VFR
                if codec == "libx264":
                    stream.options = {"crf": "20", "preset": "veryfast"}
                last_pts = -1
                for frame in reader.frames():
                    image = Image.fromarray(frame.image[:height, :width])
                    regions = self._video_regions(
                        frame.image, frame.time_s, scan.tracks, keep_track, reach
                    )
                    for box in regions:
                        blur_box(image, box)
                    blurred_regions += len(regions)
                    out_frame = av.VideoFrame.from_image(image)
                    pts = max(round(frame.time_s * 1000), last_pts + 1)
                    out_frame.pts, out_frame.time_base, last_pts = pts, Fraction(1, 1000), pts
                    container.mux(stream.encode(out_frame))
                    frames += 1
                    if progress:
                        progress(frame.time_s, info.duration_s)
                container.mux(stream.encode(None))
            partial = reader.partial
        os.replace(tmp, out)
        tracks = [
            {"track_id": t.track_id, "start_s": t.start_s, "end_s": t.end_s,
             "kept": keep_track[t.track_id]}
            for t in scan.tracks
        ]  # fmt: skip
        kept_n = sum(keep_track.values())
        return RedactionReport(
            str(source),
            file_sha256(source),
            str(out),
            file_sha256(out),
            "video",
            [],
            kept_n,
            len(scan.tracks) - kept_n,
            frames,
            tracks,
            partial or scan.partial,
            blurred_regions,
        )

    def _video_regions(
        self,
        image: np.ndarray,
        t: float,
        tracks: list[Track],
        keep_track: dict[int, bool],
        reach: float,
    ) -> list[Box]:
        """Boxes to blur in one frame: the interpolated boxes of blurred tracks, and every
        detection in this frame that is not where a kept track is."""
        regions: list[Box] = []
        kept_boxes: list[Box] = []
        for track in tracks:
            box = _box_at(track, t, reach)
            if box is None:
                continue
            (kept_boxes if keep_track[track.track_id] else regions).append(box)
        for det in self.models.pipeline.detect(image):
            if not any(iou(det.box, k) >= 0.3 for k in kept_boxes):
                regions.append(det.box)
        return regions
