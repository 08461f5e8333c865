"""Value objects shared by the services and every interface (CLI, HTTP, UI)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Box:
    """A face box in pixels of the upright image: top, right, bottom, left (dlib order)."""

    top: int
    right: int
    bottom: int
    left: int

    def as_list(self) -> list[int]:
        return [self.top, self.right, self.bottom, self.left]

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top


@dataclass(frozen=True)
class Detection:
    box: Box
    score: float
    pose: str
    """Coarse pose from the detector: frontal, left, right, rotated-left, rotated-right."""


@dataclass(frozen=True)
class Quality:
    width: int
    height: int
    blur: float
    """Variance of the Laplacian of the aligned chip; below ~50 is visibly blurred."""
    yaw: float
    """Signed nose offset from the eye midline over eye distance; 0 is frontal."""
    pose: str
    detector_score: float
    flags: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self), flags=list(self.flags))  # flat: no deep copy as in asdict


@dataclass
class FaceTemplate:
    """One detected, aligned and embedded face."""

    detection: Detection
    quality: Quality
    descriptor: np.ndarray
    chip_jpeg: bytes | None = None


@dataclass
class Candidate:
    rank: int
    distance: float
    score: float
    face_id: int
    media_id: int
    media_path: str
    source: str
    box: list[int]
    jurisdiction: str = ""
    ingested_at: str = ""
    media_sha256: str = ""
    face_index: int = 0
    time_s: float | None = None
    """For a face from a gallery video: where in the video it was taken."""
    track: int | None = None
    """For a face from a gallery video: its face track there (faces of one track are one
    person)."""
    fmr: float | None = None
    """Calibrated false match rate per comparison at this distance (an estimate, see
    docs/match-strength-and-subjects.md); None without a calibration."""
    expected_strangers: float | None = None
    """Gallery size x ``fmr``: expected number of unrelated people within this distance in
    the gallery searched (an estimate)."""
    subject: str | None = None
    """The source system's subject reference this face is linked to (ingest manifest)."""
    subject_id: int | None = None
    faces_matched: int = 1
    """Faces of this candidate (subject, or photo and its near-duplicates) within the
    threshold; this candidate shows the nearest."""
    duplicates_collapsed: int = 0
    """Of those, faces that near-duplicate another (the same photo at another resolution)."""
    grouped_face_ids: list[int] = field(default_factory=list)
    """The other faces folded into this candidate."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FaceMatches:
    box: list[int]
    quality: dict[str, Any]
    candidates: list[Candidate] = field(default_factory=list)
    expected_false_candidates: float | None = None
    """For a probe of someone not in the gallery: expected number of candidates within the
    threshold (gallery size x FMR at the threshold; an estimate)."""
    duplicates_collapsed: int = 0
    """Near-duplicate gallery faces folded into the candidates shown."""
    quality_problems: list[str] = field(default_factory=list)
    """Why this probe face is below the probe quality bar (empty: it is not)."""
    searched: bool = True
    """False: below the quality bar and not overridden, so not searched."""

    @property
    def no_candidate(self) -> bool:
        return not self.candidates

    def as_dict(self) -> dict[str, Any]:
        return {
            "box": self.box,
            "quality": self.quality,
            "quality_problems": self.quality_problems,
            "searched": self.searched,
            "candidates": [c.as_dict() for c in self.candidates],
            "no_candidate_within_threshold": self.no_candidate,
            "expected_false_candidates": self.expected_false_candidates,
            "duplicates_collapsed": self.duplicates_collapsed,
        }


SEARCH_HEADER = (
    "search_id", "probe", "probe_sha256", "case", "threshold", "gallery_size", "model",
    "detector", "audit_seq",
)  # fmt: skip


def search_header(result: SearchResult | VideoSearchResult) -> dict[str, Any]:
    """The fields every search result starts with (image or video)."""
    return {name: getattr(result, name) for name in SEARCH_HEADER}


@dataclass
class SearchResult:
    probe: str
    probe_sha256: str
    case: str
    threshold: float
    gallery_size: int
    model: str
    faces: list[FaceMatches]
    audit_seq: int | None = None
    search_id: int | None = None
    """The case's record of this search; confirmations name it."""
    notes: list[str] = field(default_factory=list)
    """What was bounded: a probe reduced for detection, faces beyond the cap not searched."""
    threshold_policy: dict[str, Any] | None = None
    """How the threshold was chosen: ``fixed`` or ``fpir`` (with its target)."""
    calibration: dict[str, Any] | None = None
    """Where the FMR estimates come from (data, fingerprint, recipe)."""
    detector: str = ""
    """The detection setting the probe's faces were found with (e.g. ``cnn-up0``)."""

    def as_dict(self) -> dict[str, Any]:
        return search_header(self) | {
            "threshold_policy": self.threshold_policy,
            "calibration": self.calibration,
            "faces": [f.as_dict() for f in self.faces],
            "notes": self.notes,
        }


@dataclass
class VerifyResult:
    same: bool
    distance: float
    threshold: float
    faces_a: int
    faces_b: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Skipped:
    path: str
    reason: str
    code: str


@dataclass
class IngestSummary:
    source: str
    images: int = 0
    faces: int = 0
    duplicates: int = 0
    faces_rejected: int = 0
    faces_suppressed: int = 0
    """Faces of people on the erasure suppression list: not stored."""
    skipped: list[Skipped] = field(default_factory=list)
    partial: list[Skipped] = field(default_factory=list)
    """Damaged videos stored with the faces decoded before the damage."""
    videos: int = 0
    interrupted: bool = False
    seconds: dict[str, float] = field(default_factory=lambda: {"store": 0.0, "index": 0.0})
    """Time this process spent writing the system of record (suppression check, encryption,
    inserts, commit) and adding to and saving the vector index."""
    subjects: dict[str, Any] | None = None
    """With a manifest: faces linked to subjects, subjects created, files not linked."""
    detector: str = ""
    """The detection setting the faces were found with (e.g. ``cnn-up0``)."""
    images_without_face: int = 0
    """Images stored in which no face was enrolled."""
    elapsed_s: float = 0.0
    """Wall-clock time of the whole run (reading, models, storing, indexing)."""
    images_reduced: int = 0
    """Images larger than the detection budget: faces detected on a reduced copy."""
    faces_capped: int = 0
    """Faces beyond the per-image cap: detected, not stored."""
    notes: list[str] = field(default_factory=list)
    """What the per-image bounds did, for the first few images they touched."""

    def as_dict(self) -> dict[str, Any]:
        per_s = self.elapsed_s or float("inf")
        return ({"subjects": self.subjects} if self.subjects is not None else {}) | {
            "source": self.source,
            "detector": self.detector,
            "images": self.images,
            "images_without_face": self.images_without_face,
            "faces": self.faces,
            "elapsed_s": round(self.elapsed_s, 3),
            "images_per_s": round(self.images / per_s, 2),
            "faces_per_s": round(self.faces / per_s, 2),
            "duplicates": self.duplicates,
            "faces_rejected": self.faces_rejected,
            "faces_suppressed": self.faces_suppressed,
            "videos": self.videos,
            "skipped": [asdict(s) for s in self.skipped],
            "partial": [asdict(s) for s in self.partial],
            "interrupted": self.interrupted,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "images_reduced": self.images_reduced,
            "faces_capped": self.faces_capped,
            "notes": list(self.notes),
        }


@dataclass
class TrackMatches:
    """One face track of a probe video and the candidates found for it."""

    track_id: int
    start_s: float
    end_s: float
    best_frame_s: float
    box: list[int]
    """Box of the best frame (top, right, bottom, left) in upright video pixels."""
    quality: dict[str, Any]
    detections: int
    candidates: list[Candidate] = field(default_factory=list)
    thumbnail_jpeg: bytes | None = None
    """Aligned crop of the track's best frame (not serialised; see ``as_dict``)."""
    expected_false_candidates: float | None = None
    quality_problems: list[str] = field(default_factory=list)
    """Why the track's best face is below the probe quality bar (empty: it is not)."""
    searched: bool = True
    """False: below the quality bar and not overridden, so not searched."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "track_id": self.track_id,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "best_frame_s": self.best_frame_s,
            "box": self.box,
            "quality": self.quality,
            "quality_problems": self.quality_problems,
            "searched": self.searched,
            "detections": self.detections,
            "candidates": [c.as_dict() for c in self.candidates],
            "no_candidate_within_threshold": not self.candidates,
            "expected_false_candidates": self.expected_false_candidates,
        }


@dataclass
class TimelineEntry:
    """Where one gallery identity appears in a probe video: merged time ranges of its tracks.

    An identity is one gallery face, or all faces of one track of a gallery video."""

    face_id: int
    """The identity's closest face."""
    face_ids: list[int]
    media_id: int
    media_path: str
    source: str
    jurisdiction: str
    best_distance: float
    score: float
    ranges: list[list[float]]
    track_ids: list[int]
    best_track_id: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VideoSearchResult:
    probe: str
    probe_sha256: str
    case: str
    threshold: float
    gallery_size: int
    model: str
    video: dict[str, Any]
    """Container facts (size, duration, frame rate, codec, rotation) and sampling counts."""
    tracks: list[TrackMatches]
    timeline: list[TimelineEntry]
    partial: str | None = None
    """Why only part of the video was searched (damaged or truncated file), if so."""
    audit_seq: int | None = None
    search_id: int | None = None
    threshold_policy: dict[str, Any] | None = None
    """How the threshold was chosen: ``fixed`` or ``fpir`` (with its target)."""
    detector: str = ""

    @property
    def unmatched_tracks(self) -> list[int]:
        return [t.track_id for t in self.tracks if not t.candidates]

    def as_dict(self) -> dict[str, Any]:
        return search_header(self) | {
            "threshold_policy": self.threshold_policy,
            "video": self.video,
            "partial": self.partial is not None,
            "partial_reason": self.partial,
            "tracks": [t.as_dict() for t in self.tracks],
            "timeline": [e.as_dict() for e in self.timeline],
            "unmatched_tracks": self.unmatched_tracks,
        }
