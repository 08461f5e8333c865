"""Worker processes that each hold a face pipeline (ingest, evaluation).

Spawned, not forked (dlib and FAISS hold threads); each worker builds its pipeline once from
the settings and ignores Ctrl-C, which the parent handles.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from facewarden.config import Settings

WORKER: dict[str, Any] = {}
"""Per-process state of a pool worker: its ``pipeline`` and ``max_pixels``."""


def worker_init(settings_json: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides about Ctrl-C
    from facewarden.services.app import build_pipeline

    settings = Settings.model_validate_json(settings_json)
    # The workers share the cores: ONNX Runtime gets its share in each, not all of them.
    share = max(1, (os.cpu_count() or 1) // max(1, settings.workers))
    WORKER["pipeline"] = build_pipeline(settings, settings.model_threads or share)
    WORKER["max_pixels"] = settings.max_image_pixels


def pipeline_pool(workers: int, settings: Settings) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes, each with a pipeline built from ``settings``."""
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=worker_init,
        initargs=(settings.model_dump_json(),),
    )
