"""Value objects shared by the services and every interface (CLI, HTTP, UI)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

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
        data = asdict(self)
        data["flags"] = list(self.flags)
        return data


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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FaceMatches:
    box: list[int]
    quality: dict[str, Any]
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def no_candidate(self) -> bool:
        return not self.candidates

    def as_dict(self) -> dict[str, Any]:
        return {
            "box": self.box,
            "quality": self.quality,
            "candidates": [c.as_dict() for c in self.candidates],
            "no_candidate_within_threshold": self.no_candidate,
        }


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

    def as_dict(self) -> dict[str, Any]:
        return {
            "search_id": self.search_id,
            "probe": self.probe,
            "probe_sha256": self.probe_sha256,
            "case": self.case,
            "threshold": self.threshold,
            "gallery_size": self.gallery_size,
            "model": self.model,
            "audit_seq": self.audit_seq,
            "faces": [f.as_dict() for f in self.faces],
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
    interrupted: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "images": self.images,
            "faces": self.faces,
            "duplicates": self.duplicates,
            "faces_rejected": self.faces_rejected,
            "faces_suppressed": self.faces_suppressed,
            "skipped": [asdict(s) for s in self.skipped],
            "interrupted": self.interrupted,
        }
