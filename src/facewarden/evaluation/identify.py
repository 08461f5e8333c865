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
from facewarden.evaluation.embedding import FALLBACK, embed_cached
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


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mixed_distractors(real: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Templates made of two real ones: the mean plus the sum of two real templates'
    deviations from it over sqrt(2) (the mean and covariance of the real set are kept, and
    its structure more than by a Gaussian). The two are drawn at random without regard to
    identity: a mixture is a person no one else is. ``real`` must not hold the probes the
    distractors are measured against (a mixture with a probe's own template is close to
    it)."""
    rng = np.random.default_rng(seed)
    mean = real.mean(axis=0)
    a = rng.integers(0, len(real), n)
    b = (a + rng.integers(1, len(real), n)) % len(real)
    return (mean + ((real[a] - mean) + (real[b] - mean)) / np.sqrt(2)).astype(np.float32)


DISTRACTORS = {"gaussian": synthetic_distractors, "mixed": mixed_distractors}
FPIR_TARGETS = (0.01, 0.05, 0.1)
FPIR_TOLERANCE = 0.25
"""Predicted FPIR holds when it lies in the observed FPIR's 95% Wilson interval widened by
25% of the prediction (the calibration's own sampling and the independence approximation)."""


def predicted_vs_observed(
    gallery_vecs: np.ndarray,
    real: int,
    nonmated_vecs: np.ndarray,
    sizes: list[int],
    distractors_from: np.ndarray,
    model_id: str,
    seed: int = 0,
) -> dict[str, Any]:
    """FPIR predicted from the committed calibration (``1 - (1 - FMR(t)) ** N``) against
    the share of non-mated searches that return a candidate within ``t``, for galleries of
    each size in ``sizes``: a random subset of the real gallery when it is large enough,
    else the whole real gallery plus synthetic distractors (``synthetic_distractors``).
    ``t``: the fpir policy's threshold for each of ``FPIR_TARGETS`` and the fixed 0.6."""
    from facewarden.calibration import for_model

    cal = for_model(model_id)
    if cal is None:
        return {"error": f"no calibration for {model_id}"}
    rng = np.random.default_rng(seed)
    rows = []
    n_probes = len(nonmated_vecs)
    real_vecs = gallery_vecs[:real]
    # A cross-check held out from the probes: the FMR among the real gallery's own pairs
    # (one image per person, every pair an impostor pair; no probe image in any of them).
    held_d = np.concatenate(
        [np.linalg.norm(real_vecs[i + 1 :] - real_vecs[i], axis=1) for i in range(real - 1)]
    )
    runs = [(size, None) for size in sizes if size <= real] + [
        (size, method) for size in sizes if size > real for method in DISTRACTORS
    ]
    for size, method in runs:
        if method is None:
            g = real_vecs[rng.choice(real, size, replace=False)]
            synthetic = 0
        else:
            synthetic = size - real
            g = np.concatenate(
                [real_vecs, DISTRACTORS[method](distractors_from, synthetic, seed=seed)]
            )
        thresholds = {f"fpir {t:g}": cal.threshold_for_fpir(t, size) for t in FPIR_TARGETS}
        thresholds["fixed 0.6"] = 0.6
        names = list(thresholds)
        real_n = min(size, real)
        nearest, counts = nearest_and_counts(
            nonmated_vecs, g, [thresholds[n] for n in names], real_n
        )
        for i, policy in enumerate(names):
            t = thresholds[policy]
            fmr = cal.fmr(t)
            predicted = 1 - (1 - fmr) ** size
            k = int((nearest <= t).sum())
            low, high = wilson(k, n_probes)
            widen = FPIR_TOLERANCE * predicted
            # The FPIR model (independent comparisons) fed with the FMR measured on this
            # very gallery: separates the calibration's realism from the model's.
            fmr_real = counts[i, 0] / (n_probes * real_n)
            fmr_synth = counts[i, 1] / (n_probes * synthetic) if synthetic else None
            measured = 1 - (1 - fmr_real) ** real_n * (1 - (fmr_synth or 0.0)) ** synthetic
            fmr_held = float((held_d <= t).mean())
            rows.append(
                {
                    "gallery_size": size,
                    "synthetic_distractors": synthetic,
                    "distractor_method": method,
                    "policy": policy,
                    "threshold": t,
                    "fmr": float(f"{fmr:.3g}"),
                    "fmr_at_floor": fmr <= cal.fmr_floor,
                    "expected_false_candidates": round(size * fmr, 4),
                    "predicted_fpir": round(predicted, 4),
                    "observed_fpir": round(k / n_probes, 4),
                    "observed_95ci": [round(low, 4), round(high, 4)],
                    "within_tolerance": bool(low - widen <= predicted <= high + widen),
                    "measured_fmr_real": float(f"{fmr_real:.3g}"),
                    "measured_fmr_synthetic": (
                        float(f"{fmr_synth:.3g}") if fmr_synth is not None else None
                    ),
                    "fpir_from_measured_fmr": round(measured, 4),
                    "fmr_held_out": float(f"{fmr_held:.3g}"),
                    "predicted_fpir_held_out": round(1 - (1 - fmr_held) ** size, 4),
                }
            )
    return {
        "nonmated_searches": n_probes,
        "calibration": cal.summary() | {"recipe_id": cal.source.get("recipe_id")},
        "prediction": "1 - (1 - FMR(t)) ** gallery_size, FMR from the committed calibration",
        "held_out_pairs": len(held_d),
        "held_out_note": "the calibration's pairs include the non-mated probes' images; "
        "predicted_fpir_held_out uses the FMR of the real gallery's own pairs instead",
        "tolerance": "predicted within the observed 95% Wilson interval, widened by "
        f"{FPIR_TOLERANCE:.0%} of the prediction",
        "distractors": "sizes up to the real gallery: a random subset of it (seed "
        f"{seed}); larger: the whole real gallery plus synthetic templates, 'gaussian' (drawn "
        "from a Gaussian with the real templates' mean and covariance) or 'mixed' (the mean "
        "plus the sum of two real templates' deviations over sqrt 2)",
        "rows": rows,
    }


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
) -> dict[str, Any]:
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
    if gallery_sizes:
        from facewarden.adapters.models.dlib_models import FivePointAligner, ResnetEmbedder
        from facewarden.core.pipeline import template_space_id

        result["fpir_predicted_vs_observed"] = predicted_vs_observed(
            gallery_vecs,
            g,
            nonmated_vecs,
            gallery_sizes,
            vecs[: g + m],  # never the non-mated probes themselves
            template_space_id(ResnetEmbedder.model_id, FivePointAligner.model_id),
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
