"""Per-face quality measures computed from the chip and the 5 landmarks."""

from __future__ import annotations

import numpy as np

from facewarden.core.schemas import Detection, Quality

BLUR_FLAG_BELOW = 30.0
YAW_FLAG_ABOVE = 0.34
"""The flags' limits, as the probe quality bar's defaults (``Settings.probe_min_blur`` and
``probe_max_yaw``): derived on the default detector's (the CNN's) boxes by
bench/quality_bar.py (bench/results/quality_bar.json)."""


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: a standard focus/blur measure."""
    g = gray.astype(np.float32)
    lap = -4 * g[1:-1, 1:-1] + g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:]
    return float(lap.var())


def yaw_from_landmarks(points: np.ndarray) -> float:
    """Yaw proxy from dlib's 5-point layout (eye corners 0-3, nose base 4).

    Returns the horizontal offset of the nose from the midpoint of the eyes, divided by the
    distance between the eye centres: about 0 for a frontal face, growing with head turn.
    """
    right_eye = points[0:2].mean(axis=0)
    left_eye = points[2:4].mean(axis=0)
    eye_mid = (right_eye + left_eye) / 2
    eye_dist = float(np.linalg.norm(left_eye - right_eye)) or 1.0
    return float((points[4][0] - eye_mid[0]) / eye_dist)


def assess(
    detection: Detection, chip_rgb: np.ndarray, landmarks: np.ndarray, min_size: int
) -> Quality:
    gray = chip_rgb.mean(axis=2)
    blur = laplacian_variance(gray)
    yaw = yaw_from_landmarks(landmarks)
    flags: list[str] = []
    if min(detection.box.width, detection.box.height) < min_size:
        flags.append("too_small")
    if blur < BLUR_FLAG_BELOW:
        flags.append("blurred")
    if abs(yaw) > YAW_FLAG_ABOVE:
        flags.append("profile")
    pose = detection.pose
    if pose == "unknown":  # the CNN gives no pose: the coarse pose from the landmarks
        pose = "frontal" if abs(yaw) <= YAW_FLAG_ABOVE else ("right" if yaw > 0 else "left")
    return Quality(
        width=detection.box.width,
        height=detection.box.height,
        blur=round(blur, 2),
        yaw=round(yaw, 3),
        pose=pose,
        detector_score=round(detection.score, 4),
        flags=tuple(flags),
    )


def probe_problems(
    quality: Quality | dict, *, min_face_px: int, min_blur: float, max_yaw: float
) -> list[str]:
    """Why a probe face is below the quality bar for a search (empty: it is not): small
    faces, blur and head turn all make false matches at a given distance more likely."""
    q = quality.as_dict() if isinstance(quality, Quality) else quality
    problems = []
    if min(q["width"], q["height"]) < min_face_px:
        problems.append("too_small")
    if q["blur"] < min_blur:
        problems.append("blurred")
    if abs(q["yaw"]) > max_yaw:
        problems.append("profile")
    return problems
