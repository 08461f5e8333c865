"""Evaluation embeddings: one template per image, every image counted.

An evaluation protocol must score every pair, so an image with no detected face uses a
central box, and one with several faces uses the face nearest the centre; both are counted
and reported.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facewarden.adapters.imaging import decode_image
from facewarden.config import Settings
from facewarden.core.pipeline import FacePipeline
from facewarden.core.schemas import Box
from facewarden.services.workers import WORKER, pipeline_pool

FALLBACK = (
    "no face detected: a central box covering the middle 46% of each side; "
    "several faces: the face whose box centre is nearest the image centre"
)


@dataclass
class ImageTemplate:
    descriptor: np.ndarray
    faces_found: int
    sha256: str


def central_box(height: int, width: int) -> Box:
    return Box(
        top=round(height * 0.27),
        right=round(width * 0.73),
        bottom=round(height * 0.73),
        left=round(width * 0.27),
    )


def embed_one(pipeline: FacePipeline, data: bytes, max_pixels: int) -> ImageTemplate:
    image = decode_image(data, max_pixels=max_pixels)
    h, w = image.shape[:2]
    detections = pipeline.detector.detect(image)
    if detections:
        cy, cx = h / 2, w / 2

        def off_centre(d) -> float:
            b = d.box
            return ((b.top + b.bottom) / 2 - cy) ** 2 + ((b.left + b.right) / 2 - cx) ** 2

        box = min(detections, key=off_centre).box
    else:
        box = central_box(h, w)
    chip, _ = pipeline.aligner.align(image, box)
    descriptor = pipeline.embedder.embed([chip])[0]
    return ImageTemplate(descriptor, len(detections), hashlib.sha256(data).hexdigest())


def _worker_embed(path: str) -> ImageTemplate:
    return embed_one(WORKER["pipeline"], Path(path).read_bytes(), WORKER["max_pixels"])


def embed_paths(
    paths: Sequence[Path],
    settings: Settings,
    *,
    pipeline: FacePipeline | None = None,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> list[ImageTemplate]:
    """Templates for ``paths`` in order, in ``workers`` processes (or in this one)."""
    out: list[ImageTemplate] = []
    if workers <= 1:
        from facewarden.services.app import build_pipeline

        pipeline = pipeline or build_pipeline(settings)
        for p in paths:
            out.append(embed_one(pipeline, Path(p).read_bytes(), settings.max_image_pixels))
            if progress:
                progress(len(out), len(paths))
        return out
    with pipeline_pool(workers, settings) as pool:
        for item in pool.map(_worker_embed, [str(p) for p in paths], chunksize=8):
            out.append(item)
            if progress:
                progress(len(out), len(paths))
    return out
