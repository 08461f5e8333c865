"""The face model interfaces, re-exported from their home in the core (core/ports.py).

Kept so existing imports keep working; new code imports from ``facewarden.core.ports``.
"""

from __future__ import annotations

from facewarden.core.ports import FaceAligner, FaceDetector, FaceEmbedder

__all__ = ["FaceAligner", "FaceDetector", "FaceEmbedder"]
