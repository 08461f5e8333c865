"""Verification and identification metrics (ISO/IEC 19795-1 terms), numpy only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def accuracy(distances: np.ndarray, same: np.ndarray, threshold: float) -> float:
    """Share of pairs decided correctly by ``distance <= threshold``."""
    return float(np.mean((distances <= threshold) == same))


def best_threshold(distances: np.ndarray, same: np.ndarray) -> float:
    """The threshold with the highest accuracy on these pairs (midpoint between neighbours)."""
    order = np.sort(np.unique(distances))
    candidates = np.concatenate([[order[0] - 1e-6], (order[:-1] + order[1:]) / 2, [order[-1]]])
    scores = [accuracy(distances, same, t) for t in candidates]
    return float(candidates[int(np.argmax(scores))])


@dataclass
class FoldResult:
    mean: float
    std: float
    thresholds: list[float]
    accuracies: list[float]


def k_fold_accuracy(distances: np.ndarray, same: np.ndarray, folds: np.ndarray) -> FoldResult:
    """LFW's protocol: for each fold, choose the threshold on the others, test on it."""
    accs, ths = [], []
    for k in np.unique(folds):
        test = folds == k
        t = best_threshold(distances[~test], same[~test])
        ths.append(round(t, 4))
        accs.append(accuracy(distances[test], same[test], t))
    return FoldResult(float(np.mean(accs)), float(np.std(accs)), ths, accs)


def roc(distances: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false accept rate, true accept rate, threshold) for every distinct threshold."""
    thresholds = np.concatenate([np.sort(np.unique(distances)), [np.inf]])
    genuine, impostor = distances[same], distances[~same]
    tar = np.array([np.mean(genuine <= t) for t in thresholds])
    far = np.array([np.mean(impostor <= t) for t in thresholds])
    return far, tar, thresholds


def tar_at_far(distances: np.ndarray, same: np.ndarray, target_far: float) -> tuple[float, float]:
    """The highest TAR whose FAR does not exceed ``target_far``, and its threshold."""
    far, tar, thresholds = roc(distances, same)
    ok = far <= target_far
    if not ok.any():
        return 0.0, 0.0
    i = int(np.flatnonzero(ok)[np.argmax(tar[ok])])
    return float(tar[i]), float(thresholds[i])


def equal_error_rate(distances: np.ndarray, same: np.ndarray) -> float:
    far, tar, _ = roc(distances, same)
    frr = 1 - tar
    i = int(np.argmin(np.abs(far - frr)))
    return float((far[i] + frr[i]) / 2)


def fnir_at_fpir(
    mated_rank1: np.ndarray, mated_correct: np.ndarray, nonmated_best: np.ndarray, fpir: float
) -> tuple[float, float]:
    """Open-set identification (NIST FRTE): the threshold at which at most ``fpir`` of the
    non-mated searches return any candidate, and the share of mated searches that then miss
    (no candidate, or the wrong one at rank 1). Returns (fnir, threshold)."""
    nonmated = np.sort(nonmated_best)
    allowed = int(np.floor(fpir * len(nonmated)))
    # Candidates at distance <= t are returned; t just below the (allowed+1)-th smallest.
    threshold = float(nonmated[allowed] - 1e-6) if allowed < len(nonmated) else np.inf
    hit = mated_correct & (mated_rank1 <= threshold)
    return float(1 - np.mean(hit)), threshold
