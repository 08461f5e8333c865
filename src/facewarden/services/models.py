"""The face models of this process: the pipeline (built on first use), the template space
it writes, and the server's probe workers; converting the networks to ONNX and describing
the runtime (``facewarden models``)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from facewarden.adapters.models.registry import (
    build_ingest_detector,
    build_pipeline,
    build_probe_detector,
    configured_template_space,
)
from facewarden.config import Settings
from facewarden.core.errors import InvalidInput
from facewarden.core.pipeline import FacePipeline
from facewarden.services.probes import Probe, ProbePool, analyse


class Models:
    def __init__(self, settings: Settings, pipeline: FacePipeline | None = None) -> None:
        self.settings = settings
        self._pipeline = pipeline
        self._ingest: FacePipeline | None = None
        self.probes: ProbePool | None = None
        """The server's probe workers (``serve`` sets them); None: probes in process."""

    @property
    def pipeline(self) -> FacePipeline:
        """The pipeline of probes, video and redaction (``Settings.detector``)."""
        if self._pipeline is None:
            if self._ingest is not None:  # share its networks and lock
                self._pipeline = self._ingest.with_detector(build_probe_detector(self.settings))
            else:
                self._pipeline = build_pipeline(self.settings)
        return self._pipeline

    @property
    def ingest_pipeline(self) -> FacePipeline:
        """The pipeline of photo ingest: the same aligner, embedder and lock as ``pipeline``
        with the photo-ingest detector (``Settings.ingest_detector``). Built without the
        probe detector when nothing needed that one yet (a CLI ingest)."""
        if self._ingest is None:
            if self.settings.ingest_detector == "same":
                self._ingest = self.pipeline
            elif self._pipeline is not None:
                self._ingest = self._pipeline.with_detector(build_ingest_detector(self.settings))
            else:
                self._ingest = build_pipeline(self.settings, ingest=True)
        return self._ingest

    @cached_property
    def model_id(self) -> str:
        """The template space this process writes (and the only one it compares)."""
        return configured_template_space(self.settings)

    def analyse_probe(self, data: bytes) -> Probe:
        """A probe's faces, decoded at a bounded size and capped (see ``services.probes``):
        in the server's probe workers, else in this process."""
        if self.probes is not None:
            return self.probes.analyse(data)
        return analyse(self.pipeline, data, self.settings)

    def close(self) -> None:
        if self.probes is not None:
            self.probes.close()
            self.probes = None


def convert_models(settings: Settings) -> list[dict[str, str | int]]:
    """Convert the descriptor and the MMOD detector to ONNX now (else done at first use) and
    cache HOG's detector: each model's file and its size; ``model_conversion_failed`` when
    one cannot be converted."""
    # dlib and the converter load only when asked for (not with the rest of the services).
    from facewarden.adapters.models.onnx_models import MMOD, RESNET, converted_path

    rows: list[dict[str, str | int]] = []
    for model in (RESNET, MMOD):
        try:
            path: Path = converted_path(model, settings.model_dir)
        except ValueError as exc:
            raise InvalidInput(str(exc), code="model_conversion_failed") from None
        size = path.stat().st_size
        rows.append({"model": model, "file": str(path), "onnx": str(path), "bytes": size})
    # HOG has no network to convert; its detector is cached beside the conversions.
    from facewarden.adapters.models.dlib_models import frontal_face_detector, hog_cache_path

    frontal_face_detector(settings.model_dir)
    hog = hog_cache_path(settings.model_dir)
    if hog.is_file():
        rows.append({"model": "dlib_hog_frontal", "file": str(hog), "bytes": hog.stat().st_size})
    return rows


def describe_models(settings: Settings) -> dict[str, str]:
    """Which runtime, detector, embedder and execution providers the pipeline uses."""
    from facewarden.adapters.models.onnx_models import providers

    pipeline = build_pipeline(settings)
    # Not part of the model protocols: every implementation names its runtime (dlib, onnx).
    detector_runtime = getattr(pipeline.detector, "runtime", "unknown")
    embedder_runtime = getattr(pipeline.embedder, "runtime", "unknown")
    return {
        "runtime setting": settings.runtime,
        "detector": f"{pipeline.detector.model_id} ({detector_runtime})",
        "ingest detector": settings.ingest_detector_setting,
        "embedder": f"{pipeline.embedder.model_id} ({embedder_runtime})",
        "template space": pipeline.model_id,
        "onnx providers": ", ".join(providers()),
    }
