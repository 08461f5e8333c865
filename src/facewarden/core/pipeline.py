"""Detect -> align -> assess quality -> embed, over the model interfaces."""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

from facewarden.core.ports import FaceAligner, FaceDetector, FaceEmbedder
from facewarden.core.quality import assess
from facewarden.core.schemas import Detection, FaceTemplate


@dataclass
class PipelineOutput:
    faces: list[FaceTemplate]
    rejected: int
    """Faces detected but not enrolled (below the minimum size)."""
    capped: int = 0
    """Faces detected beyond ``max_faces``: not processed (the largest were kept)."""


def template_space_id(embedder_id: str, aligner_id: str, flip: bool = False) -> str:
    """Identifies a template space (the template recipe): two templates compare only under
    the same id. Flip averaging (the mean of a chip's and its mirror image's descriptors)
    changes the space, so it is part of the id."""
    return f"{embedder_id}+{aligner_id}" + ("+flip" if flip else "")


class FacePipeline:
    def __init__(
        self,
        detector: FaceDetector,
        aligner: FaceAligner,
        embedder: FaceEmbedder,
        *,
        min_face_size: int = 20,
        keep_chips: bool = True,
        flip: bool = False,
    ) -> None:
        self.detector = detector
        self.flip = flip
        self.aligner = aligner
        self.embedder = embedder
        self.min_face_size = min_face_size
        self.keep_chips = keep_chips
        self._lock = threading.Lock()
        """dlib's detectors and networks keep per-call state: one image at a time per pipeline
        (the HTTP server's request threads and a background ingest share one)."""

    @property
    def model_id(self) -> str:
        return template_space_id(self.embedder.model_id, self.aligner.model_id, self.flip)

    def describe(self, chips: list[np.ndarray]) -> np.ndarray:
        """Descriptors of aligned chips under this pipeline's template recipe."""
        if not self.flip or not chips:
            return self.embedder.embed(chips)
        both = self.embedder.embed(chips + [np.ascontiguousarray(c[:, ::-1]) for c in chips])
        return (both[: len(chips)] + both[len(chips) :]) / 2

    def process(
        self, image: np.ndarray, *, enrol: bool = True, max_faces: int | None = None
    ) -> PipelineOutput:
        """All faces of an RGB image (with ``max_faces``, only the largest that many). With
        ``enrol``, faces under the size floor are rejected."""
        with self._lock:
            return self._process(image, enrol, max_faces)

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Face boxes only (redaction covers every face, whatever its quality)."""
        with self._lock:
            return self.detector.detect(image)

    def _process(self, image: np.ndarray, enrol: bool, max_faces: int | None) -> PipelineOutput:
        detections = self.detector.detect(image)
        capped = 0
        if max_faces is not None and len(detections) > max_faces:
            capped = len(detections) - max_faces
            by_size = sorted(detections, key=lambda d: -d.box.width * d.box.height)
            detections = by_size[:max_faces]
        chips, kept, rejected = [], [], 0
        for det in detections:
            chip, points = self.aligner.align(image, det.box)
            quality = assess(det, chip, points, self.min_face_size)
            if enrol and "too_small" in quality.flags:
                rejected += 1
                continue
            chips.append(chip)
            kept.append((det, quality, chip))
        descriptors = self.describe(chips)
        faces = [
            FaceTemplate(det, quality, descriptors[i], _jpeg(chip) if self.keep_chips else None)
            for i, (det, quality, chip) in enumerate(kept)
        ]
        return PipelineOutput(faces, rejected, capped)


def _jpeg(chip: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(chip).save(buf, format="JPEG", quality=90)
    return buf.getvalue()
