"""The LFW verification protocol over the full pipeline (detection, alignment, descriptor)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from facewarden.config import Settings
from facewarden.core.errors import InvalidInput
from facewarden.core.pipeline import FacePipeline
from facewarden.evaluation import metrics
from facewarden.evaluation.embedding import FALLBACK, embed_paths
from facewarden.evaluation.provenance import machine, software_versions


@dataclass
class Pairs:
    path: Path
    folds: int
    a: list[str]
    b: list[str]
    same: np.ndarray
    fold: np.ndarray


def image_path(name: str, index: str) -> str:
    return f"{name}/{name}_{int(index):04d}.jpg"


def read_pairs(path: Path) -> Pairs:
    """LFW pairs: a header ``N`` (one set) or ``FOLDS N`` (each fold N matched pairs then N
    mismatched), then ``name i j`` (same person) or ``name1 i name2 j`` lines."""
    try:
        lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read pairs file {path}: {exc}") from exc
    if not lines or not all(x.isdigit() for x in lines[0]) or len(lines[0]) not in (1, 2):
        raise InvalidInput(f"{path}: first line must be 'N' or 'FOLDS N'")
    folds, per = (1, int(lines[0][0])) if len(lines[0]) == 1 else map(int, lines[0])
    a, b, same, fold = [], [], [], []
    for n, parts in enumerate(lines[1:]):
        if len(parts) == 3:
            a.append(image_path(parts[0], parts[1]))
            b.append(image_path(parts[0], parts[2]))
            same.append(True)
        elif len(parts) == 4:
            a.append(image_path(parts[0], parts[1]))
            b.append(image_path(parts[2], parts[3]))
            same.append(False)
        else:
            raise InvalidInput(f"{path}: line {n + 2} is not a pair: {' '.join(parts)}")
        fold.append(n // (2 * per) if folds > 1 else 0)
    expected = folds * 2 * per  # N matched then N mismatched pairs per fold
    if len(a) != expected:
        raise InvalidInput(f"{path}: header promises {expected} pairs, found {len(a)}")
    return Pairs(path, folds, a, b, np.array(same), np.array(fold))


def pair_distances(pairs: Pairs, templates: dict[str, np.ndarray]) -> np.ndarray:
    return np.array(
        [
            float(np.linalg.norm(templates[x] - templates[y]))
            for x, y in zip(pairs.a, pairs.b, strict=True)
        ]
    )


def split_accuracy(
    distances: np.ndarray, same: np.ndarray, both_detected: np.ndarray, threshold: float
) -> dict[str, Any]:
    """Accuracy at ``threshold`` separately for pairs with a detected face in both images
    and pairs where at least one image used the fallback box."""
    out: dict[str, Any] = {}
    for key, mask in (("detected_both", both_detected), ("fallback", ~both_detected)):
        n = int(mask.sum())
        out[f"pairs_{key}"] = n
        out[f"accuracy_{key}"] = (
            round(metrics.accuracy(distances[mask], same[mask], threshold), 4) if n else None
        )
    return out


def evaluate_lfw(
    data: Path,
    pairs_file: Path,
    settings: Settings,
    *,
    train_file: Path | None = None,
    pipeline: FacePipeline | None = None,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Run the protocol; returns the result (JSON-ready) and the curves for plotting."""
    started = time.perf_counter()
    test = read_pairs(pairs_file)
    train = read_pairs(train_file) if train_file else None
    names = sorted({*test.a, *test.b, *((train.a + train.b) if train else [])})
    missing = [n for n in names if not (data / n).is_file()]
    if missing:
        raise InvalidInput(
            f"{len(missing)} images of the pairs are missing under {data} (first: {missing[0]})"
        )
    embedded = embed_paths(
        [data / n for n in names], settings, pipeline=pipeline, workers=workers, progress=progress
    )
    templates = {n: e.descriptor for n, e in zip(names, embedded, strict=True)}
    found = np.array([e.faces_found for e in embedded])
    fingerprint = hashlib.sha256()
    for f in (pairs_file, *([train_file] if train_file else [])):
        fingerprint.update(Path(f).read_bytes())
    for n, e in zip(names, embedded, strict=True):
        fingerprint.update(f"{n}:{e.sha256}\n".encode())

    d = pair_distances(test, templates)
    same = test.same
    detected = {n: e.faces_found > 0 for n, e in zip(names, embedded, strict=True)}
    both = np.array([detected[x] and detected[y] for x, y in zip(test.a, test.b, strict=True)])
    threshold = settings.threshold
    far, tar, thr = metrics.roc(d, same)
    tar3, thr3 = metrics.tar_at_far(d, same, 1e-3)
    result: dict[str, Any] = {
        "protocol": "LFW verification over the full pipeline",
        "pairs_file": pairs_file.name,
        "pairs": len(d),
        "genuine_pairs": int(same.sum()),
        "impostor_pairs": int((~same).sum()),
        "images": len(names),
        "images_without_face": int((found == 0).sum()),
        "test_images_without_face": len([n for n in {*test.a, *test.b} if not detected[n]]),
        "images_with_several_faces": int((found > 1).sum()),
        "fallback": FALLBACK,
        "fixed_threshold": threshold,
        "accuracy_at_fixed_threshold": round(metrics.accuracy(d, same, threshold), 4),
        "at_fixed_threshold": split_accuracy(d, same, both, threshold),
        "tar_at_far_1e-3": round(tar3, 4),
        "threshold_at_far_1e-3": round(thr3, 4),
        "far_resolution": round(1 / max(int((~same).sum()), 1), 6),
        "eer": round(metrics.equal_error_rate(d, same), 4),
        "genuine_distance_mean": round(float(d[same].mean()), 4),
        "impostor_distance_mean": round(float(d[~same].mean()), 4),
    }
    if train is not None:
        t = metrics.best_threshold(pair_distances(train, templates), train.same)
        result |= {
            "train_pairs_file": train_file.name if train_file else None,
            "threshold_chosen_on_train": round(t, 4),
            "accuracy_at_train_threshold": round(metrics.accuracy(d, same, t), 4),
            "at_train_threshold": split_accuracy(d, same, both, t),
        }
    if test.folds > 1:
        k = metrics.k_fold_accuracy(d, same, test.fold)
        result["k_fold"] = {
            "folds": test.folds,
            "mean_accuracy": round(k.mean, 4),
            "std": round(k.std, 4),
            "thresholds": k.thresholds,
        }
    result |= {
        "settings": {
            "detector": settings.detector,
            "upsample": settings.upsample,
            "detector_retry": settings.detector_retry,
            "descriptor_flip": settings.descriptor_flip,
            "runtime": settings.runtime,
            "workers": workers,
        },
        "model": (pipeline.model_id if pipeline else None) or _model_id(settings),
        "software": software_versions(),
        "machine": machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset_fingerprint": fingerprint.hexdigest(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return result, {"far": far, "tar": tar, "thresholds": thr}


def _model_id(settings: Settings) -> str:
    from facewarden.adapters.models.dlib_models import FivePointAligner, ResnetEmbedder
    from facewarden.core.pipeline import template_space_id

    return template_space_id(
        ResnetEmbedder.model_id, FivePointAligner.model_id, settings.descriptor_flip
    )


def plot_roc(curves: dict[str, np.ndarray], out: Path, title: str) -> None:
    """ROC (TAR against FAR, log scale) and DET (FRR against FAR) side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    far, tar = curves["far"], curves["tar"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    ax1.plot(np.maximum(far, 1e-4), tar)
    ax1.set(xscale="log", xlabel="false accept rate", ylabel="true accept rate", title="ROC")
    ax2.plot(np.maximum(far, 1e-4), np.maximum(1 - tar, 1e-4))
    ax2.set(
        xscale="log",
        yscale="log",
        xlabel="false accept rate",
        ylabel="false reject rate",
        title="DET",
    )
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
