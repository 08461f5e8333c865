"""What a worker (a process pool worker or a Ray actor) computes for one image: plain data,
cheap to pickle; every rule and every write stays with the ingest service."""

from __future__ import annotations

from collections.abc import Iterator
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


def _decoded(data: bytes, max_pixels: int) -> np.ndarray | Processed:
    """The image's RGB array, or the result of an image that cannot be read."""
    try:
        return decode_image(data, max_pixels=max_pixels)
    except MediaError as exc:
        return Processed(error_code=exc.code, error=exc.message)


def process_image(pipeline: FacePipeline, data: bytes, max_pixels: int) -> Processed:
    """One image, decoded before the pipeline is taken (a shared pipeline, as in the server,
    is not held while an image decodes)."""
    image = _decoded(data, max_pixels)
    if isinstance(image, Processed):
        return image
    return _processed(image.shape, pipeline.process(image, enrol=True))


def process_images(pipeline: FacePipeline, images: list[bytes], max_pixels: int) -> list[Processed]:
    """Each image decoded and processed; the faces of all of them described in one batch (a
    worker's own pipeline). Decoded one at a time as the pipeline reaches it and dropped once
    its faces are cut out: a batch never holds more than one decoded image (a small file can
    decode to 150 MB)."""
    errors: list[Processed | None] = []
    shapes: list[tuple[int, ...]] = []

    def decoded() -> Iterator[np.ndarray]:
        for data in images:
            image = _decoded(data, max_pixels)
            if isinstance(image, Processed):
                errors.append(image)
                continue
            errors.append(None)
            shapes.append(image.shape)
            yield image
            del image

    outputs = iter(pipeline.process_many(decoded(), enrol=True))
    sizes = iter(shapes)
    return [
        error if error is not None else _processed(next(sizes), next(outputs)) for error in errors
    ]


def _processed(shape: tuple[int, ...], out: PipelineOutput) -> Processed:
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
        shape[1],
        shape[0],
        faces,
        out.rejected,
        capped=out.capped,
        detected_at=out.detected_at,
    )


def process_many_in_worker(images: list[bytes]) -> list[Processed]:
    """``process_images`` with the pipeline of this pool worker (``workers.worker_init``)."""
    return process_images(WORKER["pipeline"], images, WORKER["max_pixels"])
