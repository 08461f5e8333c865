"""1:N identification over the full pipeline (NIST FRTE style), on an LFW-layout folder.

Split (deterministic): every person with two or more images is enrolled with their first
image and searched with each of the others (mated searches). People with one image are
split by a hash of their name: half are enrolled as distractors, half are searched as
non-mated probes (people not enrolled). Optionally ``distractors`` synthetic templates
(``fpir.gaussian_distractors`` of the gallery's templates) enlarge the gallery; with
``gallery_sizes``, predicted against observed FPIR by gallery size (``fpir.fpir_at_scale``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from facewarden.adapters.index.base import FaceLabel
from facewarden.adapters.index.faiss_index import FaissIndex
from facewarden.calibration import Calibration, for_model
from facewarden.config import Settings
from facewarden.core.errors import InvalidInput
from facewarden.core.pipeline import FacePipeline
from facewarden.evaluation import metrics
from facewarden.evaluation.embedding import FALLBACK, embed_cached
from facewarden.evaluation.fpir import fpir_at_scale, gaussian_distractors
from facewarden.evaluation.provenance import machine, software_versions


def split(data: Path) -> tuple[list[Path], list[tuple[Path, int]], list[Path], list[str]]:
    """(gallery images, mated probes with their gallery position, non-mated probes, names)."""
    people = sorted(p for p in data.iterdir() if p.is_dir())
    gallery: list[Path] = []
    owners: list[str] = []
    mated: list[tuple[Path, int]] = []
    nonmated: list[Path] = []
    for person in people:
        images = sorted(person.glob("*.jpg"))
        if not images:
            continue
        if len(images) >= 2:
            mated += [(img, len(gallery)) for img in images[1:]]
            gallery.append(images[0])
            owners.append(person.name)
        elif hashlib.sha256(person.name.encode()).digest()[0] % 2 == 0:
            gallery.append(images[0])
            owners.append(person.name)
        else:
            nonmated.append(images[0])
    if not mated or not nonmated:
        raise InvalidInput(
            f"{data}: needs people with two or more images and people with one image"
        )
    return gallery, mated, nonmated, owners


def nearest_and_counts(
    probes: np.ndarray,
    gallery: np.ndarray,
    thresholds: list[float],
    split_at: int,
    chunk: int = 20_000,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact distance of each probe to its nearest gallery template, and for each threshold
    the number of probe-gallery pairs within it among gallery rows before ``split_at`` and
    from it on (real and synthetic templates): shape (thresholds, 2)."""
    best = np.full(len(probes), np.inf)
    counts = np.zeros((len(thresholds), 2), np.int64)
    p = probes.astype(np.float64)
    psq = (p**2).sum(axis=1)
    t2 = np.array(thresholds) ** 2
    for start in range(0, len(gallery), chunk):
        g = gallery[start : start + chunk].astype(np.float64)
        d2 = psq[:, None] + (g**2).sum(axis=1)[None, :] - 2 * p @ g.T
        best = np.minimum(best, d2.min(axis=1))
        cut = min(max(split_at - start, 0), len(g))
        for i, limit in enumerate(t2):
            counts[i, 0] += int((d2[:, :cut] <= limit).sum())
            counts[i, 1] += int((d2[:, cut:] <= limit).sum())
    return np.sqrt(np.maximum(best, 0)), counts


def evaluate_identification(
    data: Path,
    settings: Settings,
    *,
    distractors: int = 0,
    pipeline: FacePipeline | None = None,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
    gallery_sizes: list[int] | None = None,
    cache: Path | None = None,
    calibration: Calibration | None = None,
) -> dict[str, Any]:
    """``calibration``: the table the FPIR prediction reads (default: the template space's
    committed one, read now)."""
    started = time.perf_counter()
    gallery, mated, nonmated, _ = split(data)
    paths = gallery + [p for p, _ in mated] + nonmated
    if pipeline is not None:
        from facewarden.evaluation.embedding import embed_paths

        embedded = embed_paths(paths, settings, pipeline=pipeline)
    else:
        embedded = embed_cached(paths, data, settings, cache, workers=workers, progress=progress)
    vecs = np.stack([e.descriptor for e in embedded]).astype(np.float32)
    g, m = len(gallery), len(mated)
    gallery_vecs, mated_vecs, nonmated_vecs = vecs[:g], vecs[g : g + m], vecs[g + m :]
    if distractors:
        gallery_vecs = np.concatenate(
            [gallery_vecs, gaussian_distractors(gallery_vecs, distractors)]
        )

    index = FaissIndex(None, ivf_threshold=2**62)  # in memory, exact: the model is measured
    label = FaceLabel("eval", "eval")
    index.add(
        np.arange(len(gallery_vecs), dtype=np.int64), gallery_vecs, [label] * len(gallery_vecs)
    )
    k = 10
    md, mi = index.search(mated_vecs, k)
    nd, _ = index.search(nonmated_vecs, 1)
    truth = np.array([pos for _, pos in mated])
    rank1 = mi[:, 0] == truth
    rank10 = (mi == truth[:, None]).any(axis=1)
    found = np.array([e.faces_found for e in embedded])
    result: dict[str, Any] = {
        "protocol": "1:N identification over the full pipeline",
        "gallery_real": g,
        "gallery_synthetic_distractors": distractors,
        "gallery_size": len(gallery_vecs),
        "mated_searches": m,
        "nonmated_searches": len(nonmated),
        "images_without_face": int((found == 0).sum()),
        "images_with_several_faces": int((found > 1).sum()),
        "fallback": FALLBACK,
        "rank1_identification_rate": round(float(rank1.mean()), 4),
        "rank10_identification_rate": round(float(rank10.mean()), 4),
        "rank1_at_fixed_threshold": round(
            float((rank1 & (md[:, 0] <= settings.threshold)).mean()), 4
        ),
        "fixed_threshold": settings.threshold,
        "fpir_at_fixed_threshold": round(float((nd[:, 0] <= settings.threshold).mean()), 4),
    }
    for fpir in (0.01, 0.001):
        fnir, threshold = metrics.fnir_at_fpir(md[:, 0], rank1, nd[:, 0], fpir)
        result[f"fnir_at_fpir_{fpir:g}"] = round(fnir, 4)
        result[f"threshold_at_fpir_{fpir:g}"] = round(threshold, 4)
    if gallery_sizes:
        result["fpir_predicted_vs_observed"] = _fpir(
            settings, calibration, found, g, m, vecs, gallery_sizes
        )
    fingerprint = hashlib.sha256()
    for p, e in zip(paths, embedded, strict=True):
        fingerprint.update(f"{p.relative_to(data)}:{e.sha256}\n".encode())
    result |= {
        "settings": {
            "detector": settings.detector,
            "upsample": settings.upsample,
            "detector_retry": settings.detector_retry,
            "runtime": settings.runtime,
        },
        "software": software_versions(),
        "machine": machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset_fingerprint": fingerprint.hexdigest(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return result


def _fpir(
    settings: Settings,
    calibration: Calibration | None,
    found: np.ndarray,
    g: int,
    m: int,
    vecs: np.ndarray,
    sizes: list[int],
) -> dict[str, Any]:
    """FPIR by gallery size on the faces the product would hold and search: images in
    which the detector found no face are left out of the gallery (ingest stores none) and
    of the probes (a search finds no face to search), unlike the fallback above."""
    from facewarden.adapters.models.dlib_models import FivePointAligner, ResnetEmbedder
    from facewarden.core.pipeline import template_space_id

    model_id = template_space_id(ResnetEmbedder.model_id, FivePointAligner.model_id)
    cal = calibration or for_model(model_id)
    if cal is None:
        return {"error": f"no calibration for template space {model_id}"}
    if cal.model_id != model_id:
        raise InvalidInput(f"the calibration is for {cal.model_id}, the templates {model_id}")
    n = len(found)
    detected = found > 0
    real = vecs[:g][detected[:g]]
    probes = vecs[g + m :][detected[g + m : n]]
    out = fpir_at_scale(real, probes, sizes, settings, cal)
    recipe = cal.source.get("recipe") or {}
    now = {"detector": settings.detector, "upsample": settings.upsample}
    same = all(recipe.get(k) == v for k, v in now.items())
    return out | {
        "gallery_people_without_face_left_out": int((~detected[:g]).sum()),
        "probes_without_face_left_out": int((~detected[g + m : n]).sum()),
        "calibration_recipe_matches_settings": same,
        "settings_detection": now,
    }
