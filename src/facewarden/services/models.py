"""The face models of this process: the pipeline (built on first use), the template space
it writes, and the server's probe workers."""

from __future__ import annotations

from functools import cached_property

from facewarden.adapters.models.registry import (
    build_ingest_detector,
    build_pipeline,
    configured_template_space,
)
from facewarden.config import Settings
from facewarden.core.pipeline import FacePipeline
from facewarden.services.probes import Probe, ProbePool, analyse


class Models:
    def __init__(self, settings: Settings, pipeline: FacePipeline | None = None) -> None:
        self.settings = settings
        self._pipeline = pipeline
        self.probes: ProbePool | None = None
        """The server's probe workers (``serve`` sets them); None: probes in process."""

    @property
    def pipeline(self) -> FacePipeline:
        if self._pipeline is None:
            self._pipeline = build_pipeline(self.settings)
        return self._pipeline

    @cached_property
    def ingest_pipeline(self) -> FacePipeline:
        """The pipeline of photo ingest: the same aligner, embedder and lock as ``pipeline``
        with the photo-ingest detector (``Settings.ingest_detector``)."""
        if self.settings.ingest_detector == "same":
            return self.pipeline
        return self.pipeline.with_detector(build_ingest_detector(self.settings))

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
