"""Builds the configured model set; adding an implementation is adding an entry here.

``runtime`` picks where the networks run: ``onnx`` (ONNX Runtime), ``dlib``, or ``auto``:
ONNX when onnxruntime imports and the conversion succeeds, else dlib with a warning. Both
produce the same templates (same template space), so a gallery never depends on the runtime.
"""

from __future__ import annotations

import logging
from pathlib import Path

from facewarden.config import Settings
from facewarden.core.pipeline import FacePipeline, template_space_id
from facewarden.core.ports import FaceAligner, FaceDetector, FaceEmbedder

log = logging.getLogger(__name__)
DETECTORS = ("hog", "cnn", "hybrid")
RUNTIMES = ("auto", "onnx", "dlib")


def _onnx_or_dlib(runtime: str, build_onnx, build_dlib, what: str):
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {list(RUNTIMES)}")
    if runtime == "dlib":
        return build_dlib()
    try:
        return build_onnx()
    except Exception as exc:
        if runtime == "onnx":
            raise
        log.warning("ONNX %s unavailable (%s); using dlib", what, exc)
        return build_dlib()


def build_detector(
    kind: str,
    upsample: int,
    runtime: str = "dlib",
    model_dir: Path | None = None,
    threads: int = 0,
    retry: bool = False,
) -> FaceDetector:
    """``retry``: where nothing is found, the CNN once more at ``upsample + 1``."""
    from facewarden.adapters.models import dlib_models

    if retry:
        from facewarden.adapters.models.strategy import HybridDetector

        return HybridDetector(
            build_detector(kind, upsample, runtime, model_dir, threads),
            build_detector("cnn", upsample + 1, runtime, model_dir, threads),
        )

    if kind not in DETECTORS:
        raise ValueError(f"unknown detector {kind!r}; choose one of {list(DETECTORS)}")
    if kind == "hog":  # HOG has no network: dlib's own implementation in every runtime
        return dlib_models.HogDetector(upsample, cache_dir=model_dir)
    if kind == "hybrid":
        from facewarden.adapters.models.strategy import HybridDetector

        return HybridDetector(
            dlib_models.HogDetector(upsample, cache_dir=model_dir),
            build_detector("cnn", upsample, runtime, model_dir, threads),
        )

    def onnx() -> FaceDetector:
        from facewarden.adapters.models.onnx_models import OnnxMmodDetector

        return OnnxMmodDetector(_required(model_dir), upsample, threads)

    return _onnx_or_dlib(runtime, onnx, lambda: dlib_models.CnnDetector(upsample), "detector")


def build_aligner() -> FaceAligner:
    from facewarden.adapters.models.dlib_models import FivePointAligner

    return FivePointAligner()


def build_embedder(
    runtime: str = "dlib", model_dir: Path | None = None, threads: int = 0
) -> FaceEmbedder:
    from facewarden.adapters.models.dlib_models import ResnetEmbedder

    def onnx() -> FaceEmbedder:
        from facewarden.adapters.models.onnx_models import OnnxEmbedder

        return OnnxEmbedder(_required(model_dir), threads)

    return _onnx_or_dlib(runtime, onnx, ResnetEmbedder, "embedder")


def _required(model_dir: Path | None) -> Path:
    if model_dir is None:
        raise ValueError("the ONNX runtime needs a model directory for its converted models")
    return model_dir


def build_probe_detector(settings: Settings, threads: int = 0) -> FaceDetector:
    """The detector of probes, video and redaction (``Settings.detector``)."""
    return build_detector(
        settings.detector,
        settings.upsample,
        settings.runtime,
        settings.model_dir,
        threads,
        retry=settings.detector_retry,
    )


def build_ingest_detector(settings: Settings, threads: int = 0) -> FaceDetector:
    """The detector of photo ingest (``Settings.ingest_detector``; see its docs)."""
    kind, scale = settings.ingest_detector, settings.ingest_hog_scale
    runtime, model_dir, up = settings.runtime, settings.model_dir, settings.upsample
    if kind == "same":
        return build_probe_detector(settings, threads)
    from facewarden.adapters.models import dlib_models
    from facewarden.adapters.models.strategy import HybridDetector

    detector: FaceDetector
    if kind == "hog":
        detector = dlib_models.HogDetector(0, scale, model_dir)
    elif kind == "cnn":
        detector = build_detector("cnn", up, runtime, model_dir, threads)
    elif kind == "hybrid":
        detector = HybridDetector(
            dlib_models.HogDetector(0, scale, model_dir),
            build_detector("cnn", up, runtime, model_dir, threads),
        )
    else:
        raise ValueError(f"unknown ingest detector {kind!r}")
    if settings.detector_retry:
        detector = HybridDetector(
            detector, build_detector("cnn", up + 1, runtime, model_dir, threads)
        )
    return detector


def build_pipeline(
    settings: Settings, threads: int | None = None, *, ingest: bool = False
) -> FacePipeline:
    """The configured pipeline; ``threads``: ONNX Runtime threads (default: the setting);
    ``ingest``: with the photo-ingest detector (``Settings.ingest_detector``)."""
    threads = settings.model_threads if threads is None else threads
    runtime, model_dir = settings.runtime, settings.model_dir
    detector = (
        build_ingest_detector(settings, threads)
        if ingest
        else build_probe_detector(settings, threads)
    )
    return FacePipeline(
        detector,
        build_aligner(),
        build_embedder(runtime, model_dir, threads),
        min_face_size=settings.min_face_size,
        keep_chips=settings.store_crops,
        flip=settings.descriptor_flip,
        detect_max_pixels=settings.detect_max_pixels,
        max_faces=settings.max_image_faces,
    )


def configured_template_space(settings: Settings) -> str:
    """The template space (recipe id) the configured pipeline writes: the embedder, the
    aligner and the descriptor flip (both runtimes write the same one)."""
    from facewarden.adapters.models.dlib_models import FivePointAligner, ResnetEmbedder

    return template_space_id(
        ResnetEmbedder.model_id, FivePointAligner.model_id, settings.descriptor_flip
    )
