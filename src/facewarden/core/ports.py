"""Ports: the interfaces the core needs from the outside, implemented in adapters/.

The face models are the first port here (detector, aligner, embedder): the pipeline is written
against these protocols, and adapters/models/ holds the dlib and ONNX Runtime implementations.
Other implementations (another runtime, a GPU build) plug in by providing the same attributes.
Documents (the subject access report, the public notice) are rendered through
``ReportRenderer``; adapters/reports.py renders them from the Jinja2 templates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from facewarden.core.schemas import Box, Detection


class FaceDetector(Protocol):
    model_id: str

    def detect(self, image: np.ndarray) -> list[Detection]:
        """All faces in an RGB uint8 image, boxes clipped to the image."""
        ...


class FaceAligner(Protocol):
    model_id: str

    def align(self, image: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
        """Returns (150x150x3 aligned chip, landmark points as an (N, 2) array)."""
        ...


class FaceEmbedder(Protocol):
    model_id: str
    dimension: int

    def embed(self, chips: list[np.ndarray]) -> np.ndarray:
        """(N, dimension) float32 descriptors for aligned chips."""
        ...


class ReportRenderer(Protocol):
    """Turns the services' report data into the documents people read."""

    def subject_report_html(self, report: Mapping[str, Any]) -> str:
        """A subject access report as a self-contained HTML page (every value escaped)."""
        ...

    def notice_markdown(self, notice: Mapping[str, Any]) -> str:
        """The public processing notice as Markdown."""
        ...
