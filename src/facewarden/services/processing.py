"""What a worker (a process pool worker or a Ray actor) computes for one image: plain data,
cheap to pickle; every rule and every write stays with the ingest service."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facewarden.adapters.imaging import decode_image
from facewarden.core.errors import MediaError
from facewarden.core.pipeline import FacePipeline, PipelineOutput
from facewarden.services.workers import WORKER


@dataclass
class Processed:
    """What a worker returns for one image (plain data, cheap to pickle)."""

    width: int = 0
    height: int = 0
    faces: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    error_code: str | None = None
    error: str | None = None
    kind: str = "image"
    capped: int = 0
    """Faces detected beyond the per-image cap (``max_image_faces``): not stored."""
    detected_at: tuple[int, int] | None = None
    """The reduced size faces were detected at, when the image exceeded the detection
    budget (``detect_max_pixels``)."""


def process_image(pipeline: FacePipeline, data: bytes, max_pixels: int) -> Processed:
    return process_images(pipeline, [data], max_pixels)[0]


def process_images(pipeline: FacePipeline, images: list[bytes], max_pixels: int) -> list[Processed]:
    """Each image decoded and processed; the faces of all of them described in one batch."""
    results: list[Processed | None] = []
    decoded = []
    for data in images:
        try:
            decoded.append(decode_image(data, max_pixels=max_pixels))
            results.append(None)
        except MediaError as exc:
            results.append(Processed(error_code=exc.code, error=exc.message))
    outputs = iter(pipeline.process_many(decoded, enrol=True))
    images_iter = iter(decoded)
    return [
        result if result is not None else _processed(next(images_iter), next(outputs))
        for result in results
    ]


def _processed(image: np.ndarray, out: PipelineOutput) -> Processed:
    faces = [
        {
            "box": f.detection.box.as_list(),
            "quality": f.quality.as_dict(),
            "descriptor": f.descriptor.astype("<f4").tobytes(),
            "chip": f.chip_jpeg,
        }
        for f in out.faces
    ]
    return Processed(
        image.shape[1],
        image.shape[0],
        faces,
        out.rejected,
        capped=out.capped,
        detected_at=out.detected_at,
    )


def process_many_in_worker(images: list[bytes]) -> list[Processed]:
    """``process_images`` with the pipeline of this pool worker (``workers.worker_init``)."""
    return process_images(WORKER["pipeline"], images, WORKER["max_pixels"])
