"""Embedded default: exact L2 search in process with FAISS, persisted beside the database."""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path

import faiss
import numpy as np


def _locked(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


class FaissFlatIndex:
    """Exact search (``IndexFlatL2`` behind an id map). Fine for galleries up to a few million.

    Thread-safe: the HTTP server searches while a background ingest adds and an erasure
    removes, so every operation holds one lock (FAISS itself does not lock)."""

    name = "faiss-flat"

    def __init__(self, path: Path, dimension: int = 128) -> None:
        self.path = path
        self.dimension = dimension
        self._lock = threading.RLock()
        self._index = self._load() if path.is_file() else self._empty()

    def _empty(self) -> faiss.IndexIDMap2:
        return faiss.IndexIDMap2(faiss.IndexFlatL2(self.dimension))

    def _load(self) -> faiss.IndexIDMap2:
        try:
            index = faiss.read_index(str(self.path))
        except RuntimeError:
            # A damaged cache is not an error: it is rebuilt from the database.
            return self._empty()
        if index.d != self.dimension:
            return self._empty()
        return index

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @_locked
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        self.remove(ids)
        self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)

    @_locked
    def remove(self, ids: np.ndarray) -> int:
        if len(ids) == 0 or self._index.ntotal == 0:
            return 0
        return int(self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64)))

    @_locked
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dimension)
        if self._index.ntotal == 0:
            return np.full((len(queries), k), np.inf, np.float32), np.full((len(queries), k), -1)
        sq, ids = self._index.search(queries, k)
        return np.sqrt(np.maximum(sq, 0)), ids

    @_locked
    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    @_locked
    def reset(self) -> None:
        self._index = self._empty()

    @_locked
    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        faiss.write_index(self._index, str(tmp))
        os.replace(tmp, self.path)
