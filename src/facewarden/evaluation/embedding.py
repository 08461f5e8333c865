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
from facewarden.adapters.models.registry import build_pipeline
from facewarden.config import Settings
from facewarden.core.pipeline import FacePipeline
from facewarden.core.schemas import Box, Detection
from facewarden.services.workers import WORKER, pipeline_pool

FALLBACK_SIDE = 0.8
"""The fallback box is a centred square of this share of the image's shorter side: it fits
a portrait or a face crop of any framing, and assumes nothing about LFW's (whose faces fill
the middle 46% of each side; a box cut to that would flatter the fallback on LFW alone)."""
FALLBACK = (
    "no face detected: a centred square, side 80% of the image's shorter side; "
    "several faces: the face whose box centre is nearest the image centre"
)


@dataclass
class ImageTemplate:
    descriptor: np.ndarray
    faces_found: int
    sha256: str


def fallback_box(height: int, width: int) -> Box:
    """A centred square, side ``FALLBACK_SIDE`` of the shorter side."""
    side = FALLBACK_SIDE * min(height, width)
    top, left = round((height - side) / 2), round((width - side) / 2)
    return Box(top=top, right=round(left + side), bottom=round(top + side), left=left)


def choose_box(shape: tuple[int, ...], detections: Sequence[Detection]) -> Box:
    """The detected face nearest the image centre, else the fallback box."""
    h, w = shape[:2]
    if not detections:
        return fallback_box(h, w)
    cy, cx = h / 2, w / 2

    def off_centre(d: Detection) -> float:
        b = d.box
        return ((b.top + b.bottom) / 2 - cy) ** 2 + ((b.left + b.right) / 2 - cx) ** 2

    return min(detections, key=off_centre).box


def embed_one(pipeline: FacePipeline, data: bytes, max_pixels: int) -> ImageTemplate:
    image = decode_image(data, max_pixels=max_pixels)
    detections = pipeline.detector.detect(image)
    chip, _ = pipeline.aligner.align(image, choose_box(image.shape, detections))
    descriptor = pipeline.describe([chip])[0]
    return ImageTemplate(descriptor, len(detections), hashlib.sha256(data).hexdigest())


def cache_recipe(settings: Settings) -> str:
    """What makes an evaluation template: the settings that change a descriptor (detector
    and its upsampling and retry, runtime, flip) and the fallback rule. A cache made under
    another recipe (e.g. before the default detector changed) is not reused."""
    return (
        f"{settings.detector_setting};runtime={settings.runtime};"
        f"flip={settings.descriptor_flip};fallback={FALLBACK_SIDE}"
    )


def _worker_embed(path: str) -> ImageTemplate:
    return embed_one(WORKER["pipeline"], Path(path).read_bytes(), WORKER["max_pixels"])


def embed_cached(
    paths: Sequence[Path],
    root: Path,
    settings: Settings,
    cache: Path | None,
    *,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> list[ImageTemplate]:
    """``embed_paths`` with an optional cache file (npz) keyed by each file's path under
    ``root`` and its content hash: only images not in it (or changed) are embedded, and the
    cache is rewritten with them. The cache holds templates of a labelled research set, never
    of a gallery; it is a file the operator names. It records ``cache_recipe``: a cache of
    another recipe (or of none) is ignored and rewritten."""
    known: dict[str, ImageTemplate] = {}
    recipe = cache_recipe(settings)
    if cache is not None and cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            same = "recipe" in z.files and str(z["recipe"]) == recipe
            for name, sha, found, vec in zip(
                z["names"], z["sha256"], z["found"], z["vecs"], strict=True
            ):
                if not same:
                    break
                known[str(name)] = ImageTemplate(vec.astype(np.float32), int(found), str(sha))
    names = [str(Path(p).relative_to(root)) for p in paths]
    hashes = [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths]
    todo = [
        i
        for i, (n, h) in enumerate(zip(names, hashes, strict=True))
        if getattr(known.get(n), "sha256", None) != h
    ]
    fresh = embed_paths([paths[i] for i in todo], settings, workers=workers, progress=progress)
    for i, t in zip(todo, fresh, strict=True):
        known[names[i]] = t
    if cache is not None and todo:
        keys = sorted(known)
        cache.parent.mkdir(parents=True, exist_ok=True)
        with cache.open("wb") as f:
            np.savez(
                f,
                recipe=np.array(recipe),
                names=np.array(keys),
                sha256=np.array([known[k].sha256 for k in keys]),
                found=np.array([known[k].faces_found for k in keys]),
                vecs=np.stack([known[k].descriptor for k in keys]).astype(np.float32),
            )
    return [known[n] for n in names]


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
