"""dlib's tiled image pyramid for the MMOD detector, reproduced in NumPy.

dlib runs its MMOD network once over one image holding every pyramid level (each 5/6 of the
previous), packed in two columns with padding. Where a level lands decides which pixels the
network's stride-8 grid samples, so the layout, the normalisation and the bilinear resampling
follow dlib (``compute_tiled_image_pyramid_details``, ``input_rgb_image_pyramid::to_tensor``,
``tt::resize_bilinear``) for boxes and scores equal to dlib's.
"""

from __future__ import annotations

import math

import numpy as np

Rect = tuple[int, int, int, int]
"""Inclusive (left, top, right, bottom), as dlib's rectangle."""

RATE = 5 / 6  # pyramid_down<6>
MIN_HEIGHT = 5
PADDING, OUTER_PADDING = 10, 11  # dlib's defaults for models saved without them


def _height(r: Rect) -> int:
    return r[3] - r[1] + 1


def _width(r: Rect) -> int:
    return r[2] - r[0] + 1


def tile_layout(
    nr: int, nc: int, padding: int = PADDING, outer: int = OUTER_PADDING
) -> tuple[list[Rect], int, int]:
    """Each level's place in the tiled image, and the tiled image's (rows, cols)."""
    sizes = [(nr, nc)]
    while True:
        nr, nc = math.floor(RATE * nr), math.floor(RATE * nc)
        if nr * nc == 0 or nr < MIN_HEIGHT:
            break
        sizes.append((nr, nc))
    rects: list[Rect] = [(0, 0, c - 1, r - 1) for r, c in sizes]
    total = sum(_height(r) + padding for r in rects) - 2 * padding
    height, prev_width, first = 0, 0, rects[0]
    for r in rects:
        if _width(r) <= _width(first) - prev_width - padding and (
            height - _height(first)
        ) * 2 >= total - _height(first):
            break
        height += _height(r) + padding
        prev_width = _width(r)
    height -= padding
    width = _width(first)
    y, i, placed = outer, 0, []
    while y < height + outer and i < len(rects):
        r = rects[i]
        placed.append((r[0] + outer, r[1] + y, r[2] + outer, r[3] + y))
        y += _height(r) + padding
        i += 1
    y -= padding
    while i < len(rects):
        r = rects[i]
        right, bottom = outer + width - 1, y - 1
        rect = (right - (_width(r) - 1), bottom - (_height(r) - 1), right, bottom)
        p0 = placed[0]
        if rect[0] <= p0[2] and p0[0] <= rect[2] and rect[1] <= p0[3] and p0[1] <= rect[3]:
            break  # the second column would run into the full-size image
        placed.append(rect)
        y -= _height(r) + padding
        i += 1
    return placed, height + 2 * outer, width + 2 * outer


def resize_bilinear(src: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """dlib's tt::resize_bilinear on a (channels, rows, cols) float32 array (corners aligned)."""
    _, src_rows, src_cols = src.shape
    y_scale = np.float32((src_rows - 1) / max(rows - 1, 1))
    x_scale = np.float32((src_cols - 1) / max(cols - 1, 1))
    y = np.arange(rows, dtype=np.float32) * y_scale
    x = np.arange(cols, dtype=np.float32) * x_scale
    top, left = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    bottom, right = np.minimum(top + 1, src_rows - 1), np.minimum(left + 1, src_cols - 1)
    ty = (y - top).astype(np.float32)[:, None]
    lx = (x - left).astype(np.float32)[None, :]
    # Columns first, then rows, in place: the same float32 operations in the same order as
    # dlib's per-pixel formula (bit-identical), with two gathers per axis instead of four
    # of the whole image (about 3x faster; this is most of the detector's Python time).
    across = np.take(src, left, axis=2)
    across *= 1 - lx
    right_part = np.take(src, right, axis=2)
    right_part *= lx
    across += right_part
    upper = np.take(across, top, axis=1)
    upper *= 1 - ty
    lower = np.take(across, bottom, axis=1)
    lower *= ty
    upper += lower
    return upper


def tiled_tensor(
    image: np.ndarray, mean: tuple[float, float, float]
) -> tuple[np.ndarray, list[Rect]]:
    """The (1, 3, H, W) network input for an RGB uint8 image, and each level's rectangle."""
    rects, rows, cols = tile_layout(image.shape[0], image.shape[1])
    data = np.zeros((3, rows, cols), dtype=np.float32)
    offset = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    level = (image.transpose(2, 0, 1).astype(np.float32) - offset) / 256
    l0, t0, r0, b0 = rects[0]
    data[:, t0 : b0 + 1, l0 : r0 + 1] = level
    for rect in rects[1:]:
        level = resize_bilinear(level, _height(rect), _width(rect))
        data[:, rect[1] : rect[3] + 1, rect[0] : rect[2] + 1] = level
    return data[None], rects


def nearest_rect(rects: list[Rect], x: float, y: float) -> int:
    """Index of the level rectangle nearest to a point (dlib's nearest_rect)."""
    best, best_d = 0, math.inf
    for i, (left, top, right, bottom) in enumerate(rects):
        dx = max(left - x, 0.0, x - right)
        dy = max(top - y, 0.0, y - bottom)
        d = dx * dx + dy * dy
        if d < best_d:
            best, best_d = i, d
    return best
