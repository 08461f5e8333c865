"""Calibrated false-match estimates for a template space.

A calibration table (committed package data, written by ``bench/calibrate.py``) holds the
false match rate per comparison (FMR) at each distance, measured on labelled impostor pairs
(different people). From it a search derives, for each candidate, the FMR at its distance and
the expected number of unrelated people within that distance in a gallery of the current
size (``gallery_size x FMR``), and, for a threshold policy by target FPIR, the largest
distance whose expected number of strangers stays within the target.

These are estimates: they hold for faces like the calibration data (LFW press photos) and
assume that the comparisons of one probe with the gallery are independent; they are not a
probability that a given candidate is or is not the person.
"""

from __future__ import annotations

import bisect
import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from facewarden.core.errors import InvalidInput

TABLES = {"dlib_face_recognition_resnet_model_v1+dlib-sp5": "dlib_resnet_v1.json"}
"""Template space id -> calibration file in this package."""


@dataclass(frozen=True)
class Calibration:
    model_id: str
    distances: tuple[float, ...]
    """Ascending distances of the table."""
    fmrs: tuple[float, ...]
    """FMR at each distance (impostor pairs at or below it / all impostor pairs), floored at
    ``fmr_floor`` where too few impostor pairs were that close to measure it."""
    fmr_floor: float
    pairs: int
    source: dict[str, Any]

    def fmr(self, distance: float) -> float:
        """FMR per comparison at ``distance``: the table's value at the smallest tabulated
        distance at or above it (a step function, never an underestimate between points)."""
        i = bisect.bisect_left(self.distances, distance - 1e-9)
        if i >= len(self.distances):
            return 1.0
        return self.fmrs[i]

    def expected_strangers(self, distance: float, gallery_size: int) -> float:
        """Expected number of unrelated gallery faces within ``distance`` of a probe."""
        return gallery_size * self.fmr(distance)

    def predicted_fpir(self, distance: float, gallery_size: int) -> float:
        """FPIR of a search for someone not in a gallery of ``gallery_size`` at threshold
        ``distance``, if the probe's comparisons were independent: ``1 - (1 - FMR) ** N``
        (``expected_strangers`` is its union bound)."""
        return 1.0 - (1.0 - self.fmr(distance)) ** max(gallery_size, 0)

    def policy_threshold(self, target: float, gallery_size: int, ceiling: float) -> float:
        """The fpir threshold policy's distance: ``threshold_for_fpir``, never looser than
        ``ceiling`` (the configured fixed threshold). Search and ``eval identify`` use it."""
        return min(self.threshold_for_fpir(target, gallery_size), ceiling)

    def threshold_for_fpir(self, target: float, gallery_size: int) -> float:
        """The largest tabulated distance whose ``gallery_size x FMR`` is at most ``target``.

        ``gallery_size x FMR`` is the expected number of false candidates of a non-mated
        search and an upper bound of the FPIR ``1 - (1 - FMR) ** gallery_size`` (the union
        bound; close to it while the product is small), so the threshold errs on the strict
        side. When even the smallest distance is over the target, that distance is used."""
        if not 0 < target < 1:
            raise InvalidInput("the target FPIR must be in (0, 1)")
        n = max(gallery_size, 1)
        best = self.distances[0]
        for d, f in zip(self.distances, self.fmrs, strict=True):
            if n * f <= target:
                best = d
            else:
                break
        return best

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.model_id,
            "pairs": self.pairs,
            "fmr_floor": self.fmr_floor,
            "data": self.source.get("data", {}).get("name"),
            "data_fingerprint": self.source.get("data", {}).get("files_sha256"),
            "recipe": self.source.get("recipe"),
        }


def from_dict(doc: dict[str, Any]) -> Calibration:
    rows = doc["table"]
    return Calibration(
        model_id=doc["model_id"],
        distances=tuple(float(r["distance"]) for r in rows),
        fmrs=tuple(float(r["fmr"]) for r in rows),
        fmr_floor=float(doc["fmr_floor"]),
        pairs=int(doc["impostor_pairs"]),
        source={k: v for k, v in doc.items() if k != "table"},
    )


@functools.cache
def for_model(model_id: str) -> Calibration | None:
    """The committed calibration of a template space, or None if it has none."""
    name = TABLES.get(model_id)
    if name is None:
        return None
    text = resources.files(__name__).joinpath(name).read_text()
    return from_dict(json.loads(text))
