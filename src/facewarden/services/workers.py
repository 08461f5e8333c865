"""Worker processes that each hold a face pipeline (ingest, evaluation).

Spawned, not forked (dlib and FAISS hold threads); each worker builds its pipeline once from
the settings and ignores Ctrl-C, which the parent handles.

Workers die with their parent, even when it is killed with SIGKILL: on Linux the kernel sends
the worker SIGKILL when the parent dies (``PR_SET_PDEATHSIG``, set when the pool was made by
the parent's main thread: the kernel ties the signal to the creating thread), and on every
platform a watch thread in the worker exits it within half a second of the parent's death.
The multiprocessing resource tracker exits by itself once the parent and the workers, which
hold its pipe, are gone.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported late: a new worker runs die_with_parent as early as it can
    from facewarden.config import Settings

WORKER: dict[str, Any] = {}
"""Per-process state of a pool worker: its ``pipeline`` and ``max_pixels``."""


PARENT_POLL_S = 0.5
PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, *, kernel_signal: bool) -> None:
    """Exit this process when ``parent_pid`` dies (see the module docstring)."""
    if kernel_signal and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the watch thread still works
            pass
    if os.getppid() != parent_pid:  # the parent died before this line ran
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_S)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def worker_init(
    settings_json: str,
    parent_pid: int | None = None,
    main: bool = False,
    nice: int = 0,
    ingest: bool = False,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides about Ctrl-C
    if parent_pid is not None:
        die_with_parent(parent_pid, kernel_signal=main)
    if nice and hasattr(os, "nice"):
        os.nice(nice)  # a background lane: the CPU goes to the others first
    from facewarden.adapters.models.registry import build_pipeline
    from facewarden.config import Settings

    settings = Settings.model_validate_json(settings_json)
    # The workers share the cores: ONNX Runtime gets its share in each, not all of them.
    share = max(1, (os.cpu_count() or 1) // max(1, settings.workers))
    WORKER["pipeline"] = build_pipeline(settings, settings.model_threads or share, ingest=ingest)
    WORKER["max_pixels"] = settings.max_image_pixels


def pipeline_pool(
    workers: int, settings: Settings, nice: int = 0, *, ingest: bool = False
) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes, each with a pipeline built from ``settings`` (with
    ``nice``, at that much lower CPU priority; with ``ingest``, the photo-ingest detector);
    the pool :func:`pool_started_early` started for these arguments, when there is one
    with at least ``workers`` processes (an ingest of fewer images than the early pool's
    workers takes it: its workers are started already, and a second pool beside it would
    load the models again while the first sits idle to the end)."""
    settings_json = settings.model_dump_json()
    key = (settings_json, nice, ingest)
    early = _EARLY.pop(key, None)
    if early is not None:
        if early[0] >= workers:
            return early[1]
        _EARLY.setdefault(key, early)
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=worker_init,
        initargs=(
            settings_json,
            os.getpid(),
            threading.current_thread() is threading.main_thread(),
            nice,
            ingest,
        ),
    )


_EARLY: dict[tuple[str, int, bool], tuple[int, ProcessPoolExecutor]] = {}
"""The pools :func:`pool_started_early` started, not yet taken: (workers, pool) by settings."""


def _started() -> None:
    """A task that makes a pool start one more worker process (they start on demand)."""


@contextmanager
def pool_started_early(workers: int, settings: Settings, *, ingest: bool = False) -> Iterator[None]:
    """Start a pool's worker processes now, so that their start-up (imports and models,
    about half a second each) overlaps the caller's own (imports, opening the database and
    checking the request): a CLI ingest starts them before it opens the app. Within the
    block, :func:`pipeline_pool` with the same arguments (or fewer workers) takes this pool;
    a pool not taken (a refused request, one image) is shut down when the block ends."""
    pool = pipeline_pool(workers, settings, ingest=ingest)
    key = (settings.model_dump_json(), 0, ingest)
    early = _EARLY[key] = (workers, pool)
    try:
        # Started at once, when a user is likeliest to press Ctrl-C: the terminal sends
        # SIGINT to the workers too, which would die of it, with a traceback, before
        # worker_init makes them ignore it. Blocked while they are spawned, it stays blocked
        # in them (the mask survives exec) and reaches this process once they are started
        # (its KeyboardInterrupt then ends the block below like any other).
        masked = hasattr(signal, "pthread_sigmask")
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if masked else None
        try:
            for _ in range(workers):
                pool.submit(_started)
        finally:
            if previous is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        yield
    finally:
        if _EARLY.get(key) is early:
            del _EARLY[key]
            # Not taken: its workers have done no work. Killed, not left to finish loading
            # the models, which this process's exit would wait for (a refused ingest).
            for process in list((pool._processes or {}).values()):
                process.kill()
            pool.shutdown(wait=False, cancel_futures=True)


@contextmanager
def cores_to_workers() -> Iterator[None]:
    """While worker processes have the cores, this process's numeric libraries (OpenBLAS in
    NumPy and FAISS, FAISS's OpenMP) run one thread each. Left at one thread per core, their
    idle threads spin after each small call (a 32 x 128 rotation, an index add) on cores the
    workers need: on 2 cores, a 600-image ingest's main process used 1.9 s of CPU with them
    and 0.9 s without. Only from the main thread (a CLI ingest): OpenBLAS's thread count is
    the whole process's, and in the server a limit set by one job's thread would also cap
    the searches of the request threads (and OpenBLAS ignores a change made from another
    thread than the one that set it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield
