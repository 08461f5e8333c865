"""While worker processes have the cores, the ingest's own process runs its numeric
libraries (OpenBLAS, FAISS's OpenMP) on one thread, and gives the threads back afterwards:
their idle threads would otherwise spin on the cores the workers need."""

from __future__ import annotations

import threading

from threadpoolctl import threadpool_info

from facewarden.services.workers import cores_to_workers

from conftest import GALLERY, add_source


def blas_threads() -> set[int]:
    """Threads of NumPy's OpenBLAS (one count for the process; FAISS's OpenMP-built copy
    answers per calling thread)."""
    return {
        pool["num_threads"]
        for pool in threadpool_info()
        if pool["user_api"] == "blas" and "numpy" in pool["filepath"]
    }


def test_the_limit_is_lifted_on_exit_nested_too_and_never_set_from_another_thread():
    before = blas_threads()
    with cores_to_workers():
        assert blas_threads() == {1}
        with cores_to_workers():
            assert blas_threads() == {1}
        assert blas_threads() == {1}  # the inner exit does not lift the outer limit
    assert blas_threads() == before
    seen: list[set[int]] = []

    def server_job() -> None:  # an upload job's thread in the server
        with cores_to_workers():
            seen.append(blas_threads())

    thread = threading.Thread(target=server_job)
    thread.start()
    thread.join(10)
    assert seen == [before] and blas_threads() == before


def test_a_pool_ingest_runs_its_main_process_on_one_blas_thread(fw, admin):
    add_source(fw, admin)
    before = blas_threads()
    seen: list[set[int]] = []

    def progress(done: int, total: int, what: str) -> None:
        seen.append(blas_threads())

    photos = sorted(GALLERY.glob("*.jpg"))[:3]
    summary = fw.ingest.run(admin, photos, "press", workers=2, progress=progress)
    assert summary.images == 3 and summary.faces >= 3
    assert seen and all(threads == {1} for threads in seen)
    assert blas_threads() == before
