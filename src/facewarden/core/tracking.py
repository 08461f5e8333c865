"""Link per-frame face detections into tracks (box overlap plus descriptor similarity).

A track is one person's continuous appearance. Reviewers reason about tracks, not frames:
searching the best few frames of each track replaces hundreds of near-identical searches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facewarden.core.schemas import Box, Candidate, FaceTemplate, TimelineEntry, TrackMatches


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    w = min(a.right, b.right) - max(a.left, b.left)
    h = min(a.bottom, b.bottom) - max(a.top, b.top)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / float(a.width * a.height + b.width * b.height - inter)


def quality_score(face: FaceTemplate) -> float:
    """How useful a face is for recognition: size, sharpness and frontality, 0..1."""
    q = face.quality
    size = min(min(q.width, q.height), 120) / 120
    sharp = min(q.blur, 150.0) / 150.0
    frontal = max(0.0, 1.0 - abs(q.yaw) / 0.6)
    return round(0.5 * size + 0.2 * sharp + 0.3 * frontal, 4)


@dataclass
class Observation:
    """One face in one sampled frame."""

    time_s: float
    face: FaceTemplate

    @property
    def box(self) -> Box:
        return self.face.detection.box

    @property
    def score(self) -> float:
        return quality_score(self.face)


@dataclass
class Track:
    track_id: int
    observations: list[Observation] = field(default_factory=list)

    @property
    def start_s(self) -> float:
        return self.observations[0].time_s

    @property
    def end_s(self) -> float:
        return self.observations[-1].time_s

    @property
    def last(self) -> Observation:
        return self.observations[-1]

    def best(self, n: int, *, min_distance: float = 0.0) -> list[Observation]:
        """Up to ``n`` highest-quality observations, each at least ``min_distance`` (in
        descriptor space) from those already chosen: near-duplicates are dropped."""
        chosen: list[Observation] = []
        for obs in sorted(self.observations, key=lambda o: (-o.score, o.time_s)):
            if len(chosen) == n:
                break
            if all(
                np.linalg.norm(obs.face.descriptor - c.face.descriptor) >= min_distance
                for c in chosen
            ):
                chosen.append(obs)
        return chosen


class FaceTracker:
    """Greedy frame-to-frame association.

    A detection continues a track seen within ``max_gap_s`` when its descriptor is within
    ``link_distance`` of the track's recent faces and either the boxes overlap
    (IoU >= ``min_iou``) or the descriptors alone are close (<= ``appearance_distance``,
    for a person who moved or was briefly hidden). Cheapest pairs are linked first.
    """

    def __init__(
        self,
        *,
        max_gap_s: float = 1.0,
        min_iou: float = 0.2,
        link_distance: float = 0.55,
        appearance_distance: float = 0.4,
        recent: int = 3,
        keep_chips: int = 5,
    ) -> None:
        self.max_gap_s = max_gap_s
        self.min_iou = min_iou
        self.link_distance = link_distance
        self.appearance_distance = appearance_distance
        self.recent = recent
        self.keep_chips = keep_chips
        """Crops are kept for a track's best few faces only, bounding memory on long videos."""
        self._tracks: list[Track] = []
        self.detections = 0

    def update(self, time_s: float, faces: list[FaceTemplate]) -> list[int]:
        """Add one sampled frame's faces; returns the track id of each face."""
        self.detections += len(faces)
        active = [t for t in self._tracks if time_s - t.end_s <= self.max_gap_s]
        pairs = []
        for fi, face in enumerate(faces):
            for ti, track in enumerate(active):
                recent = track.observations[-self.recent :]
                dist = min(
                    float(np.linalg.norm(face.descriptor - o.face.descriptor)) for o in recent
                )
                overlap = iou(track.last.box, face.detection.box)
                if dist > self.link_distance:
                    continue
                if overlap < self.min_iou and dist > self.appearance_distance:
                    continue
                pairs.append((dist + 0.5 * (1.0 - overlap), fi, ti))
        pairs.sort()
        assigned: dict[int, Track] = {}
        used: set[int] = set()
        for _, fi, ti in pairs:
            if fi in assigned or ti in used:
                continue
            assigned[fi] = active[ti]
            used.add(ti)
        ids = []
        for fi, face in enumerate(faces):
            linked = assigned.get(fi)
            if linked is None:
                linked = Track(len(self._tracks) + 1)
                self._tracks.append(linked)
            linked.observations.append(Observation(time_s, face))
            self._trim_chips(linked)
            ids.append(linked.track_id)
        return ids

    def _trim_chips(self, track: Track) -> None:
        with_chips = [o for o in track.observations if o.face.chip_jpeg is not None]
        if len(with_chips) > self.keep_chips:
            min(with_chips, key=lambda o: o.score).face.chip_jpeg = None

    @property
    def tracks(self) -> list[Track]:
        return list(self._tracks)


def merge_ranges(ranges: list[tuple[float, float]], gap_s: float) -> list[list[float]]:
    """Union of time ranges, joining those less than ``gap_s`` apart."""
    merged: list[list[float]] = []
    for start, end in sorted(ranges):
        if merged and start - merged[-1][1] <= gap_s:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [[round(s, 3), round(e, 3)] for s, e in merged]


def identity_key(cand: Candidate) -> tuple[int, int]:
    """Gallery faces that are one person by construction: one track of one gallery video;
    any other face stands alone."""
    return (cand.media_id, cand.track) if cand.track is not None else (0, cand.face_id)


def build_timeline(tracks: list[TrackMatches], gap_s: float) -> list[TimelineEntry]:
    """For each gallery identity found in any track: when it appears and how close it came."""
    by_identity: dict[tuple[int, int], list[tuple[TrackMatches, Candidate]]] = {}
    for track in tracks:
        for cand in track.candidates:
            by_identity.setdefault(identity_key(cand), []).append((track, cand))
    entries = []
    for hits in by_identity.values():
        best_track, best = min(hits, key=lambda h: (h[1].distance, h[0].track_id))
        entries.append(
            TimelineEntry(
                face_id=best.face_id,
                face_ids=sorted({c.face_id for _, c in hits}),
                media_id=best.media_id,
                media_path=best.media_path,
                source=best.source,
                jurisdiction=best.jurisdiction,
                best_distance=best.distance,
                score=best.score,
                ranges=merge_ranges([(t.start_s, t.end_s) for t, _ in hits], gap_s),
                track_ids=sorted({t.track_id for t, _ in hits}),
                best_track_id=best_track.track_id,
            )
        )
    return sorted(entries, key=lambda e: (e.best_distance, e.face_id))
