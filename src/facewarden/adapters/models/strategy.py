"""Detection strategies that combine detectors."""

from __future__ import annotations

import numpy as np

from facewarden.adapters.models.base import FaceDetector
from facewarden.core.schemas import Detection


class HybridDetector:
    """The first detector, then the second only on images where the first found nothing:
    HOG's speed on frontal portraits and the CNN's reach on turned or dark faces, or the CNN
    at one more upsampling for small faces (the cost only where the first found nothing)."""

    def __init__(self, first: FaceDetector, then: FaceDetector) -> None:
        self.first, self.then = first, then
        self.model_id = f"{first.model_id}>{then.model_id}"
        self.runtime = getattr(then, "runtime", "dlib")

    def detect(self, image: np.ndarray) -> list[Detection]:
        return self.first.detect(image) or self.then.detect(image)
