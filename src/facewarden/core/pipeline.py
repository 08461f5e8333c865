"""Detect -> align -> assess quality -> embed, over the model interfaces."""

from __future__ import annotations

import copy
import io
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from facewarden.core.ports import FaceAligner, FaceDetector, FaceEmbedder
from facewarden.core.quality import assess
from facewarden.core.schemas import Box, Detection, FaceTemplate, Quality


@dataclass
class PipelineOutput:
    faces: list[FaceTemplate]
    rejected: int
    """Faces detected but not enrolled (below the minimum size)."""
    capped: int = 0
    """Faces detected beyond ``max_faces``: not processed (the largest were kept)."""
    detected_at: tuple[int, int] | None = None
    """(width, height) of the reduced copy the detector was given, when the image was larger
    than the detection budget allows (boxes are in the image's own pixels all the same)."""


def max_upsampling(detector: object) -> float:
    """The most doublings ``detector`` may apply to an image, a retry's included (a hybrid or
    retrying detector is two detectors, ``first`` and ``then``); a detector that scales the
    image by a ``scale`` first counts ``log2(scale)`` more."""
    own = float(getattr(detector, "upsample", 0) or 0)
    own += math.log2(float(getattr(detector, "scale", 1.0) or 1.0))
    parts = [getattr(detector, name, None) for name in ("first", "then")]
    return max([own] + [max_upsampling(p) for p in parts if p is not None])


def detection_size(
    width: int, height: int, budget: int | None, upsampling: float
) -> tuple[int, int]:
    """The size to give the detector: the image's own, or reduced (aspect kept) so that the
    detector, after its own ``upsampling`` doublings, works on at most ``budget`` pixels."""
    work = width * height * 4**upsampling
    if not budget or work <= budget:
        return width, height
    scale = math.sqrt(budget / work)
    return max(1, int(width * scale)), max(1, int(height * scale))


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
        detect_max_pixels: int | None = None,
        max_faces: int | None = None,
    ) -> None:
        self.detector = detector
        self.detect_max_pixels = detect_max_pixels
        """Pixels the detector may work on, after its own upsampling (None: no bound). A
        larger image is detected on a reduced copy; faces are aligned from the full image."""
        self.max_faces = max_faces
        """Faces processed per image when a call does not say (None: all)."""
        self.flip = flip
        self.aligner = aligner
        self.embedder = embedder
        self.min_face_size = min_face_size
        self.keep_chips = keep_chips
        self._lock = threading.Lock()
        """dlib's detectors and networks keep per-call state: one image at a time per pipeline
        (the HTTP server's request threads and a background ingest share one)."""

    def with_detector(self, detector: FaceDetector) -> FacePipeline:
        """This pipeline with another detector: the same aligner, embedder, settings and lock
        (the networks still run one image at a time, whichever pipeline calls them)."""
        other = copy.copy(self)
        other.detector = detector
        return other

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
        """All faces of an RGB image (with ``max_faces``, only the largest that many; default
        the pipeline's ``max_faces``). With ``enrol``, faces under the size floor are
        rejected."""
        with self._lock:
            return self._process(image, enrol, max_faces or self.max_faces)

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Face boxes only (redaction covers every face, whatever its quality)."""
        with self._lock:
            return self._detect(image)[0]

    def _detect(self, image: np.ndarray) -> tuple[list[Detection], tuple[int, int] | None]:
        """Detections in ``image``'s pixels, found on a reduced copy when the image is larger
        than the detection budget (the detector's memory and time grow with its pixels: a
        7000x4000 photo at upsampling 1 took 1.1 GB with HOG, far more with the CNN)."""
        height, width = image.shape[:2]
        size = detection_size(width, height, self.detect_max_pixels, max_upsampling(self.detector))
        if size == (width, height):
            return self.detector.detect(image), None
        small = Image.fromarray(np.ascontiguousarray(image)).resize(
            size, Image.Resampling.BILINEAR, reducing_gap=2.0
        )
        found = self.detector.detect(np.asarray(small))
        del small
        sx, sy = width / size[0], height / size[1]

        def scaled(box: Box) -> Box:
            return Box(
                top=round(box.top * sy),
                right=round(box.right * sx),
                bottom=round(box.bottom * sy),
                left=round(box.left * sx),
            )

        return [Detection(scaled(d.box), d.score, d.pose) for d in found], size

    def process_many(
        self, images: Iterable[np.ndarray], *, enrol: bool = True
    ) -> list[PipelineOutput]:
        """:meth:`process` of each image, the descriptors of all their faces computed in one
        batch (the network runs a batch faster per face than one face at a time). Only the
        faces' chips are kept until then: ``images`` may be a generator, each image dropped
        once its faces are cut out."""
        with self._lock:
            found = [self._found(image, enrol, self.max_faces) for image in images]
            descriptors = self.describe([chip for f in found for _, _, chip in f.kept])
        outputs, start = [], 0
        for f in found:
            outputs.append(f.output(descriptors[start : start + len(f.kept)], self.keep_chips))
            start += len(f.kept)
        return outputs

    def _process(self, image: np.ndarray, enrol: bool, max_faces: int | None) -> PipelineOutput:
        found = self._found(image, enrol, max_faces)
        return found.output(self.describe([chip for _, _, chip in found.kept]), self.keep_chips)

    def _found(self, image: np.ndarray, enrol: bool, max_faces: int | None) -> _Found:
        """An image's faces detected, capped, aligned and assessed; not yet described."""
        image = np.ascontiguousarray(image)  # dlib's aligner refuses strided arrays
        detections, detected_at = self._detect(image)
        capped = 0
        if max_faces is not None and len(detections) > max_faces:
            capped = len(detections) - max_faces
            by_size = sorted(detections, key=lambda d: -d.box.width * d.box.height)
            detections = by_size[:max_faces]
        kept, rejected = [], 0
        for det in detections:
            chip, points = self.aligner.align(image, det.box)
            quality = assess(det, chip, points, self.min_face_size)
            if enrol and "too_small" in quality.flags:
                rejected += 1
                continue
            kept.append((det, quality, chip))
        return _Found(kept, rejected, capped, detected_at)


@dataclass
class _Found:
    kept: list[tuple[Detection, Quality, np.ndarray]]
    rejected: int
    capped: int
    detected_at: tuple[int, int] | None

    def output(self, descriptors: np.ndarray, keep_chips: bool) -> PipelineOutput:
        faces = [
            FaceTemplate(det, quality, descriptors[i], _jpeg(chip) if keep_chips else None)
            for i, (det, quality, chip) in enumerate(self.kept)
        ]
        return PipelineOutput(faces, self.rejected, self.capped, self.detected_at)


def _jpeg(chip: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(chip).save(buf, format="JPEG", quality=90)
    return buf.getvalue()
