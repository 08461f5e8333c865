"""1:N identification over the full pipeline (NIST FRTE style), on an LFW-layout folder.

Split (deterministic): every person with two or more images is enrolled with their first
image and searched with each of the others (mated searches). People with one image are
split by a hash of their name: half are enrolled as distractors, half are searched as
non-mated probes (people not enrolled). Optionally ``distractors`` synthetic templates,
drawn from a Gaussian with the real templates' mean and covariance, enlarge the gallery.
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
from facewarden.config import Settings
from facewarden.core.errors import InvalidInput
from facewarden.core.pipeline import FacePipeline
from facewarden.evaluation import metrics
from facewarden.evaluation.embedding import FALLBACK, embed_paths
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


def synthetic_distractors(real: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Templates drawn from a Gaussian with the real templates' mean and covariance. The
    covariance is shrunk towards a scaled identity (same trace) when the real set is small
    relative to the dimension, so that few real templates do not yield degenerate samples
    crowded at the mean."""
    rng = np.random.default_rng(seed)
    mean = real.mean(axis=0)
    cov = np.cov(real, rowvar=False)
    d = real.shape[1]
    shrink = min(1.0, d / max(len(real), 1))
    cov = (1 - shrink) * cov + shrink * (np.trace(cov) / d) * np.eye(d)
    return rng.multivariate_normal(mean, cov, size=n, method="eigh").astype(np.float32)


def evaluate_identification(
    data: Path,
    settings: Settings,
    *,
    distractors: int = 0,
    pipeline: FacePipeline | None = None,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    gallery, mated, nonmated, _ = split(data)
    paths = gallery + [p for p, _ in mated] + nonmated
    embedded = embed_paths(paths, settings, pipeline=pipeline, workers=workers, progress=progress)
    vecs = np.stack([e.descriptor for e in embedded]).astype(np.float32)
    g, m = len(gallery), len(mated)
    gallery_vecs, mated_vecs, nonmated_vecs = vecs[:g], vecs[g : g + m], vecs[g + m :]
    if distractors:
        gallery_vecs = np.concatenate([gallery_vecs, synthetic_distractors(vecs, distractors)])

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
    fingerprint = hashlib.sha256()
    for p, e in zip(paths, embedded, strict=True):
        fingerprint.update(f"{p.relative_to(data)}:{e.sha256}\n".encode())
    result |= {
        "settings": {
            "detector": settings.detector,
            "upsample": settings.upsample,
            "runtime": settings.runtime,
        },
        "software": software_versions(),
        "machine": machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset_fingerprint": fingerprint.hexdigest(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return result
