"""Builds the configured model set; adding an implementation is adding an entry here."""

from __future__ import annotations

from facewarden.adapters.models.base import FaceAligner, FaceDetector, FaceEmbedder


def build_detector(kind: str, upsample: int) -> FaceDetector:
    from facewarden.adapters.models import dlib_models

    detectors = {"hog": dlib_models.HogDetector, "cnn": dlib_models.CnnDetector}
    if kind not in detectors:
        raise ValueError(f"unknown detector {kind!r}; choose one of {sorted(detectors)}")
    return detectors[kind](upsample)


def build_aligner() -> FaceAligner:
    from facewarden.adapters.models.dlib_models import FivePointAligner

    return FivePointAligner()


def build_embedder() -> FaceEmbedder:
    from facewarden.adapters.models.dlib_models import ResnetEmbedder

    return ResnetEmbedder()
