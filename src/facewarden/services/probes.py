"""Probes (search, verification, subject look-ups): decoded at a bounded size, faces detected
(at most ``max_probe_faces``, the largest) and embedded.

The server runs probes in a pool of worker processes, one pipeline each, so searches use
every core instead of queueing on one pipeline; admission is bounded (the workers plus a short
queue) and a probe beyond it is refused at once with :class:`Busy` (HTTP 503, Retry-After)
instead of piling up. The CLI analyses its one probe in process.
"""

from __future__ import annotations

import io
import math
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from PIL import Image

from facewarden.adapters.imaging import decode, probe_crop_jpeg, truncated
from facewarden.adapters.models.registry import build_pipeline
from facewarden.config import Settings
from facewarden.core.errors import Busy, MediaError
from facewarden.core.pipeline import FacePipeline
from facewarden.core.schemas import FaceTemplate
from facewarden.services.workers import WORKER, pipeline_pool


@dataclass
class Probe:
    faces: list[FaceTemplate]
    """The faces found (the largest ``max_probe_faces``), in the reduced image's pixels."""
    notes: list[str] = field(default_factory=list)
    """What was bounded, for the result: a reduced probe, faces beyond the cap."""
    crops: list[bytes] = field(default_factory=list)
    """Each face with a margin, as a small JPEG (kept encrypted with the case for review;
    the probe image itself is never stored)."""


def analyse(pipeline: FacePipeline, data: bytes, settings: Settings) -> Probe:
    """Decode ``data`` at most ``probe_max_side`` on its longer side and find its faces."""
    decoded = decode(data, max_pixels=settings.max_image_pixels, max_side=settings.probe_max_side)
    out = pipeline.process(decoded.rgb, enrol=False, max_faces=settings.max_probe_faces)
    notes = []
    if decoded.reduced:
        (w0, h0), (h, w) = decoded.original_size, decoded.rgb.shape[:2]
        notes.append(
            f"probe {w0}x{h0} reduced to {w}x{h} for detection (FACEWARDEN_PROBE_MAX_SIDE "
            f"{settings.probe_max_side}); face boxes are in the reduced image's pixels"
        )
    if out.capped:
        notes.append(
            f"{len(out.faces) + out.capped} faces detected: the largest "
            f"{settings.max_probe_faces} were searched, {out.capped} were not "
            "(FACEWARDEN_MAX_PROBE_FACES)"
        )
    crops = [probe_crop_jpeg(decoded.rgb, f.detection.box.as_list()) for f in out.faces]
    return Probe(out.faces, notes, crops)


def _worker_analyse(data: bytes, settings_json: str) -> Probe | tuple[str, str]:
    """In a pool worker: the probe, or a MediaError as (code, message) (exceptions with
    keyword arguments do not survive pickling)."""
    settings = WORKER.get("settings") or Settings.model_validate_json(settings_json)
    WORKER["settings"] = settings
    try:
        return analyse(WORKER["pipeline"], data, settings)
    except MediaError as exc:
        return exc.code, exc.message


def _ready() -> bool:
    return "pipeline" in WORKER


class _Lane:
    """A pool of ``workers`` processes with admission bounded to ``capacity`` probes."""

    def __init__(
        self, name: str, settings: Settings, workers: int, queue: int, nice: int = 0
    ) -> None:
        self.name, self.settings, self.workers, self.nice = name, settings, workers, nice
        self.capacity = workers + queue
        self.slots = threading.BoundedSemaphore(self.capacity)
        self.seconds = 1.0  # moving average of one probe's time (for Retry-After)
        self.lock = threading.Lock()
        self.pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        worker_settings = self.settings.model_copy(update={"workers": self.workers})
        pool = pipeline_pool(self.workers, worker_settings, self.nice)
        for _ in range(self.workers):  # start the workers and load their models now
            pool.submit(_ready)
        return pool

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: one probe's time shared by the workers (a
        longer wait leaves workers idle once the queue drains; 1 to 60)."""
        return max(1, min(60, math.ceil(self.seconds / self.workers)))

    def run(self, data: bytes, settings_json: str) -> Probe | tuple[str, str]:
        pool = self.pool
        try:
            return pool.submit(_worker_analyse, data, settings_json).result()
        except BrokenProcessPool as exc:
            # A worker died (killed, or out of memory): replace the pool for the next probe.
            with self.lock:
                if self.pool is pool:
                    pool.shutdown(wait=False, cancel_futures=True)
                    self.pool = self._new_pool()
            raise Busy("a probe worker stopped; try again", retry_after=5) from exc

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


QUEUE_PER_WORKER = 8
"""Default probes waiting per worker of the search lane (``search_queue`` 0)."""
HEAVY_NICE = 10
"""CPU niceness of the large-probe lane's workers."""


def probe_pixels(data: bytes) -> int:
    """Pixels a probe declares in its header (0 when it cannot be read: it fails fast).
    A truncated JPEG or PNG is refused here, before it takes a worker's place."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                size, fmt = img.size, img.format
    except Exception:  # anything unreadable is refused quickly by the decoder itself
        return 0
    if fmt is not None and truncated(fmt, data):
        raise MediaError(
            f"truncated image: the {fmt} data ends before the image does", code="truncated"
        )
    return size[0] * size[1]


class ProbePool:
    """Probes analysed in ``search_workers`` processes (or, with 0, in this process one at a
    time), at most ``search_queue`` more waiting; beyond that, :class:`Busy` at once.

    Probes declaring more than ``search_heavy_pixels`` go to a lane of their own (half the
    workers, at least one, with its own short queue), so a few huge photos cannot hold up
    every small search behind them."""

    def __init__(self, settings: Settings, pipeline: FacePipeline | None = None) -> None:
        self.settings = settings
        self.workers = settings.search_workers
        self._pipeline = pipeline
        self._settings_json = settings.model_dump_json()
        self._lock = threading.Lock()
        # Default: eight waiting per worker, so 16 clients on 2 cores queue instead of being
        # sent away (a refused client waits its Retry-After while a worker may go idle).
        queue = settings.search_queue or QUEUE_PER_WORKER * max(1, self.workers)
        self.light: _Lane | None = None
        self.heavy: _Lane | None = None
        if self.workers:
            self.light = _Lane("search", settings, self.workers, queue)
            if settings.search_heavy_pixels:
                heavy = max(1, self.workers // 2)
                # Niced: on a busy machine small searches get the cores first.
                self.heavy = _Lane("large-probe", settings, heavy, 2 * heavy, HEAVY_NICE)
            self.capacity = self.light.capacity
        else:
            self.capacity = 1 + queue
        self._slots = threading.BoundedSemaphore(self.capacity)  # in-process mode
        self._seconds = 1.0

    def analyse(self, data: bytes) -> Probe:
        if self.light is None:
            return self._in_process(data)
        lane = self.light
        if self.heavy is not None and probe_pixels(data) > self.settings.search_heavy_pixels:
            lane = self.heavy
        if not lane.slots.acquire(blocking=False):
            raise Busy(
                f"the server is busy: {lane.capacity} probes are being processed or queued "
                f"({lane.name} workers); try again shortly",
                retry_after=lane.retry_after(),
            )
        started = time.monotonic()
        try:
            result = lane.run(data, self._settings_json)
        finally:
            lane.slots.release()
            lane.seconds = 0.8 * lane.seconds + 0.2 * (time.monotonic() - started)
        if isinstance(result, tuple):
            code, message = result
            raise MediaError(message, code=code)
        return result

    def _in_process(self, data: bytes) -> Probe:
        if not self._slots.acquire(blocking=False):
            raise Busy(
                f"the server is busy: {self.capacity} probes are being processed or queued; "
                "try again shortly",
                retry_after=max(1, min(60, math.ceil(self._seconds))),
            )
        started = time.monotonic()
        try:
            with self._lock:
                if self._pipeline is None:
                    self._pipeline = build_pipeline(self.settings)
            return analyse(self._pipeline, data, self.settings)
        finally:
            self._slots.release()
            self._seconds = 0.8 * self._seconds + 0.2 * (time.monotonic() - started)

    def close(self) -> None:
        for lane in (self.light, self.heavy):
            if lane is not None:
                lane.close()
        self.light = self.heavy = None
