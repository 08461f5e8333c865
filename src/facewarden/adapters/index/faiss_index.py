"""Embedded default: FAISS in process, persisted beside the database.

Small galleries are searched exactly (``IndexFlatL2``). Once a gallery holds
``ivf_threshold`` faces it switches to IVF-PQ: 32-byte codes in RAM (64 sub-quantisers of 4
bits, scanned with FAISS's SIMD "fast-scan" kernels, 3-4x faster than 8-bit codes at equal
recall after the re-rank) propose ``rerank`` candidates, which are re-scored exactly from
the raw vectors in a memory-mapped file, so RAM stays near 40 MB per million faces. The
coarse quantiser is retrained automatically whenever the gallery has grown fourfold since
the last training.

A filter planner serves narrow filters (few faces admitted: at most ``exact_subset``, or as
many raw vectors as cost what the IVF scan costs when the gallery is larger) by an exact
scan of just the admitted faces' raw vectors; broad filters (10% of faces or more) by an
unfiltered search for proportionally more candidates, filtered before the re-rank; those in
between go through the index with a FAISS ID selector.

Removal is logical and physical at once: the face leaves the index and its raw vector is
overwritten with zeros in the mapped file; ``purge`` flushes and fsyncs the file and rewrites
the persisted state, after which the removed bytes are gone from the files facewarden owns.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from facewarden.adapters.index.base import (
    FaceLabel,
    IndexFilter,
    PurgeReport,
    empty_result,
    pad_result,
)

log = logging.getLogger(__name__)

STATE_VERSION = 1
PQ_M, PQ_BITS = 64, 4  # 64 sub-quantisers of 4 bits: 32 bytes per face, fast-scan layout
NPROBE_SHARE = 3 / 16  # lists visited by default: recall@10 0.99 at 1M after the re-rank
RAW_COST = 4  # an exact distance from a raw vector costs about 4 fast-scan code distances
BROAD_SHARE = 0.1  # filters admitting at least this share of faces post-filter the index
FILTER_COPY_BYTES = 32 * 2**20  # an exactly scanned filter's vectors kept contiguous up to this


def _locked(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


def nlist_for(n: int) -> int:
    """Inverted lists for ``n`` vectors: a power of two near 4 sqrt(n), within [64, 65536]."""
    target = 4 * np.sqrt(max(n, 1))
    return int(min(65536, max(64, 2 ** round(np.log2(target)))))


class _Labels:
    """Per-slot source and jurisdiction, as small integer codes into two name tables."""

    def __init__(self, sources: list[str] | None = None, jurisdictions: list[str] | None = None):
        self.sources = sources or []
        self.jurisdictions = jurisdictions or []
        self._s = {name: i for i, name in enumerate(self.sources)}
        self._j = {name: i for i, name in enumerate(self.jurisdictions)}

    def codes(self, labels: Sequence[FaceLabel]) -> tuple[np.ndarray, np.ndarray]:
        s = np.array([self._code(self._s, self.sources, lab.source) for lab in labels], np.int32)
        j = np.array(
            [self._code(self._j, self.jurisdictions, lab.jurisdiction) for lab in labels],
            np.int32,
        )
        return s, j

    @staticmethod
    def _code(table: dict[str, int], names: list[str], name: str) -> int:
        if name not in table:
            table[name] = len(names)
            names.append(name)
        return table[name]

    def allowed(self, names: frozenset[str] | None, which: str) -> np.ndarray | None:
        if names is None:
            return None
        table = self._s if which == "source" else self._j
        return np.array([table[n] for n in names if n in table], np.int32)


@dataclass(frozen=True)
class _Admitted:
    """What a filter admits: a mask over slots, its count, and (cached for the search path
    the planner takes) the slots themselves for an exact scan, with a contiguous copy of
    their raw vectors when small, or the selector's bitmap."""

    mask: np.ndarray
    count: int
    slots: np.ndarray | None
    bitmap: np.ndarray | None
    vectors: np.ndarray | None = None


class FaissIndex:
    """Exact or IVF-PQ with exact re-rank; see the module docstring.

    Thread-safe: the HTTP server searches while a background ingest adds and an erasure
    removes, so every operation holds one lock (FAISS itself does not lock)."""

    name = "faiss"

    def __init__(
        self,
        directory: Path | None,
        dimension: int = 128,
        *,
        ivf_threshold: int = 100_000,
        nprobe: int = 0,
        rerank: int = 200,
        exact_subset: int = 50_000,
    ) -> None:
        """``directory`` None keeps everything in memory (evaluation, tests)."""
        self.directory = directory
        self.dimension = dimension
        self.ivf_threshold = ivf_threshold
        self.nprobe_setting = nprobe
        self.rerank = rerank
        self.exact_subset = exact_subset
        self._lock = threading.RLock()
        self._removed_since_purge = 0
        self._version = 0  # bumped by every change; keys the filter-mask cache
        self._filters: dict[IndexFilter, tuple[int, _Admitted]] = {}
        if not self._load():
            self._clear()

    # -- state ---------------------------------------------------------------------------
    def _clear(self) -> None:
        self._slots = np.zeros(0, np.int64)  # face id per slot, -1 once removed
        self._src = np.zeros(0, np.int32)
        self._jur = np.zeros(0, np.int32)
        self._labels = _Labels()
        self._live = 0
        self._trained_on = 0
        self._version = getattr(self, "_version", 0) + 1
        self._filters = {}
        self._index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatL2(self.dimension))
        self._open_raw(0, truncate=True)

    @property
    def _raw_path(self) -> Path | None:
        return self.directory / "vectors.f32" if self.directory else None

    @property
    def _state_path(self) -> Path | None:
        return self.directory / "state.npz" if self.directory else None

    def _open_raw(self, rows: int, *, truncate: bool = False) -> None:
        """Map the raw-vector file with room for at least ``rows`` vectors."""
        capacity = max(1024, 1 << int(np.ceil(np.log2(max(rows, 1)))))
        if self._raw_path is None:
            old = getattr(self, "_raw", None)
            raw = np.zeros((capacity, self.dimension), np.float32)
            if old is not None and not truncate:
                raw[: min(len(old), capacity)] = old[: min(len(old), capacity)]
            self._raw = raw
            return
        self._raw_path.parent.mkdir(parents=True, exist_ok=True)
        if hasattr(self, "_raw") and isinstance(self._raw, np.memmap):
            self._raw.flush()
            del self._raw
        mode = "w+" if truncate or not self._raw_path.exists() else "r+"
        with open(self._raw_path, "ab" if mode == "r+" else "wb") as f:
            size = max(f.tell(), capacity * self.dimension * 4)
            f.truncate(size)
        self._raw = np.memmap(self._raw_path, np.float32, "r+").reshape(-1, self.dimension)

    def _load(self) -> bool:
        path = self._state_path
        if path is None or not path.is_file() or not self._raw_path.is_file():
            return False
        try:
            with np.load(path, allow_pickle=False) as state:
                meta = json.loads(bytes(state["meta"]).decode())
                if meta["version"] != STATE_VERSION or meta["dimension"] != self.dimension:
                    return False
                self._slots = state["slots"].astype(np.int64)
                self._src = state["src"].astype(np.int32)
                self._jur = state["jur"].astype(np.int32)
                self._index = faiss.deserialize_index(state["index"])
            self._labels = _Labels(meta["sources"], meta["jurisdictions"])
            self._trained_on = meta["trained_on"]
            self._removed_since_purge = meta.get("removed_since_purge", 0)
            self._live = int((self._slots >= 0).sum())
            rows = os.path.getsize(self._raw_path) // (4 * self.dimension)
            if rows < len(self._slots) or self._index.ntotal != self._live:
                return False
            self._open_raw(len(self._slots))
            if self._trained_on and not isinstance(self._index, faiss.IndexIVFPQFastScan):
                log.info("index state holds 8-bit PQ codes: retraining with fast-scan codes")
                self._train()  # from the raw vectors: no templates decrypted
            return True
        except (OSError, KeyError, ValueError, RuntimeError, json.JSONDecodeError):
            # A damaged cache is not an error: it is rebuilt from the database.
            log.warning("index state at %s unreadable; it will be rebuilt", path)
            return False

    # -- the interface ---------------------------------------------------------------------
    def __len__(self) -> int:
        return self._live

    @property
    def mode(self) -> str:
        return "ivfpq" if self._trained_on else "flat"

    @_locked
    def add(self, ids: np.ndarray, vectors: np.ndarray, labels: Sequence[FaceLabel]) -> None:
        if len(ids) == 0:
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dimension)
        if len(labels) != len(ids) or len(vectors) != len(ids):
            raise ValueError("ids, vectors and labels differ in length")
        if self._live and ids.min() <= self._slots.max():
            self._remove(ids, erasure=False)  # replace, never duplicate
        start = len(self._slots)
        slots = np.arange(start, start + len(ids), dtype=np.int64)
        if start + len(ids) > len(self._raw):
            self._open_raw(start + len(ids))
        self._raw[start : start + len(ids)] = vectors
        src, jur = self._labels.codes(labels)
        self._slots = np.concatenate([self._slots, ids])
        self._src = np.concatenate([self._src, src])
        self._jur = np.concatenate([self._jur, jur])
        self._index.add_with_ids(vectors, slots)
        self._live += len(ids)
        self._version += 1
        if self._should_train():
            self._train()

    def _should_train(self) -> bool:
        if self._live < self.ivf_threshold:
            return False
        return self._trained_on == 0 or self._live >= 4 * self._trained_on

    def _train(self) -> None:
        """(Re)build the IVF-PQ index from the raw vectors of every live face."""
        live = np.flatnonzero(self._slots >= 0)
        nlist = nlist_for(len(live))
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(live, size=min(len(live), 64 * nlist), replace=False))
        log.info("training IVF-PQ: %d faces, %d lists, %d samples", len(live), nlist, len(sample))
        quantizer = faiss.IndexFlatL2(self.dimension)
        index = faiss.IndexIVFPQFastScan(quantizer, self.dimension, nlist, PQ_M, PQ_BITS)
        index.train(np.ascontiguousarray(self._raw[sample]))
        for start in range(0, len(live), 200_000):
            chunk = live[start : start + 200_000]
            index.add_with_ids(np.ascontiguousarray(self._raw[chunk]), chunk.astype(np.int64))
        self._index = index
        self._trained_on = len(live)

    @property
    def nprobe(self) -> int:
        if not self._trained_on:
            return 0
        nlist = self._index.nlist
        return min(nlist, self.nprobe_setting or max(16, round(nlist * NPROBE_SHARE)))

    @property
    def exact_limit(self) -> int:
        """Most admitted faces a filtered search scans exactly: ``exact_subset``, or, when
        more, the raw vectors that cost what the IVF scan costs (``nprobe`` of ``nlist``
        lists of codes, each code about a ``RAW_COST``-th of a raw distance: measured at 10M,
        24.5 ms per million scattered raw vectors). The exact scan finds the exact top-k,
        where the IVF scan with an ID selector loses the admitted faces of unprobed lists."""
        if not self._trained_on:
            return self._live
        codes = self._live * self.nprobe // self._index.nlist
        return max(self.exact_subset, codes // RAW_COST)

    @_locked
    def remove(self, ids: np.ndarray) -> int:
        return self._remove(ids, erasure=True)

    def _remove(self, ids: np.ndarray, *, erasure: bool) -> int:
        if len(ids) == 0 or self._live == 0:
            return 0
        slots = np.flatnonzero(np.isin(self._slots, np.asarray(ids, np.int64)))
        if len(slots) == 0:
            return 0
        self._index.remove_ids(slots.astype(np.int64))
        self._raw[slots] = 0.0  # the bytes go with the face, not at some later compaction
        self._slots[slots] = -1
        self._version += 1
        self._filters.clear()  # cached copies of filters' vectors may hold the removed ones
        self._live -= len(slots)
        self._removed_since_purge += len(slots) if erasure else 0
        return len(slots)

    @_locked
    def search(
        self,
        queries: np.ndarray,
        k: int,
        where: IndexFilter | None = None,
        *,
        exact: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dimension)
        if self._live == 0 or (where is not None and where.empty):
            return empty_result(len(queries), k)
        admitted = self._admitted(where)
        mask = admitted.mask if admitted is not None else None
        if exact and self._trained_on:
            live = np.flatnonzero(self._slots >= 0 if mask is None else mask)
            return self._exact_subset(queries, k, live)
        if admitted is not None:
            if admitted.count == 0:
                return empty_result(len(queries), k)
            if admitted.slots is not None:
                return self._exact_subset(queries, k, admitted.slots, admitted.vectors)
            share = admitted.count / self._live
            if share >= BROAD_SHARE:
                # Broad filter: search unfiltered for proportionally more candidates and
                # drop the others (faster than an ID selector inside the IVF scan).
                fetch = int(np.ceil(max(self.rerank, k) / share))
                _, slots = self._index.search(queries, fetch, params=self._params(None))
                admitted_slots = (slots >= 0) & mask[np.maximum(slots, 0)]
                return self._rerank(queries, np.where(admitted_slots, slots, -1), k)
        if not self._trained_on:
            sq, slots = self._index.search(queries, k, params=self._params(admitted))
            return self._to_ids(np.sqrt(np.maximum(sq, 0)), slots)
        fetch = max(self.rerank, k)
        _, slots = self._index.search(queries, fetch, params=self._params(admitted))
        return self._rerank(queries, slots, k)

    def _admitted(self, where: IndexFilter | None) -> _Admitted | None:
        """The slots ``where`` admits, cached per filter until the next add or removal (at
        10M faces, recomputing them costs more than the search)."""
        if where is None or (where.sources is None and where.jurisdictions is None):
            return None
        cached = self._filters.get(where)
        if cached is not None and cached[0] == self._version:
            return cached[1]
        if len(self._filters) >= 8:
            self._filters.clear()
        mask = self._slots >= 0
        for codes, column in (
            (self._labels.allowed(where.sources, "source"), self._src),
            (self._labels.allowed(where.jurisdictions, "jurisdiction"), self._jur),
        ):
            if codes is not None:
                mask &= np.isin(column, codes)
        count = int(mask.sum())
        exact = count <= self.exact_limit  # always, below the IVF threshold
        slots = np.flatnonzero(mask) if exact else None
        # Gathering the admitted vectors from the mapped file is most of an exact scan's
        # cost at 10M faces (one page each): a small filter's are copied once, contiguously.
        small = exact and count * self.dimension * 4 <= FILTER_COPY_BYTES
        admitted = _Admitted(
            mask,
            count,
            slots,
            None if exact else np.packbits(mask, bitorder="little"),
            np.ascontiguousarray(self._raw[slots]) if small and self._trained_on else None,
        )
        self._filters[where] = (self._version, admitted)
        return admitted

    def _params(self, admitted: _Admitted | None) -> faiss.SearchParameters | None:
        selector = None
        if admitted is not None:
            self._bitmap = admitted.bitmap  # kept alive for the call
            selector = faiss.IDSelectorBitmap(len(admitted.mask), faiss.swig_ptr(self._bitmap))
        if self._trained_on:
            return faiss.SearchParametersIVF(sel=selector, nprobe=self.nprobe)
        return faiss.SearchParameters(sel=selector) if selector is not None else None

    def _exact_subset(
        self,
        queries: np.ndarray,
        k: int,
        slots: np.ndarray,
        vectors: np.ndarray | None = None,
        chunk: int = 131_072,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top ``k`` among ``slots`` (ascending), read from the raw vectors in chunks
        of at most 64 MB, so an exact search of the whole gallery needs no copy of it, or
        from ``vectors``, their rows already gathered."""
        if vectors is not None:
            sq, pos = faiss.knn(queries, vectors, min(k, len(slots)))
            return self._to_ids(np.sqrt(np.maximum(sq, 0)), np.where(pos >= 0, slots[pos], -1), k)
        best_sq = np.full((len(queries), 0), np.inf, np.float32)
        best = np.zeros((len(queries), 0), np.int64)
        for start in range(0, len(slots), chunk):
            part = slots[start : start + chunk]
            sq, pos = faiss.knn(queries, np.ascontiguousarray(self._raw[part]), min(k, len(part)))
            found = np.where(pos >= 0, part[np.maximum(pos, 0)], -1)
            best_sq = np.concatenate([best_sq, np.where(pos >= 0, sq, np.inf)], axis=1)
            best = np.concatenate([best, found], axis=1)
            keep = np.argsort(best_sq, axis=1, kind="stable")[:, :k]
            best_sq = np.take_along_axis(best_sq, keep, axis=1)
            best = np.take_along_axis(best, keep, axis=1)
        return self._to_ids(np.sqrt(np.maximum(best_sq, 0)), best, k)

    def _rerank(
        self, queries: np.ndarray, slots: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        rows = []
        for q, cand in zip(queries, slots, strict=True):
            cand = np.sort(cand[cand >= 0])  # sorted: sequential reads of the mapped file
            d = np.linalg.norm(self._raw[cand] - q, axis=1)
            order = np.argsort(d, kind="stable")[:k]
            rows.append([(float(d[i]), int(self._slots[cand[i]])) for i in order])
        return pad_result(rows, k)

    def _to_ids(
        self, dists: np.ndarray, slots: np.ndarray, k: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        ids = np.where(slots >= 0, self._slots[np.maximum(slots, 0)], -1)
        dists = np.where(ids >= 0, dists, np.inf).astype(np.float32)
        if k is not None and dists.shape[1] < k:
            pad = k - dists.shape[1]
            dists = np.pad(dists, ((0, 0), (0, pad)), constant_values=np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        return dists, ids

    @_locked
    def ids(self) -> np.ndarray:
        return self._slots[self._slots >= 0].copy()

    @_locked
    def reset(self) -> None:
        self._removed_since_purge += self._live
        self._clear()

    @_locked
    def save(self) -> None:
        if self.directory is None:
            return
        if isinstance(self._raw, np.memmap):
            self._raw.flush()
        meta = {
            "version": STATE_VERSION,
            "dimension": self.dimension,
            "trained_on": self._trained_on,
            "sources": self._labels.sources,
            "jurisdictions": self._labels.jurisdictions,
            "removed_since_purge": self._removed_since_purge,
        }
        buffer = io.BytesIO()
        np.savez(
            buffer,
            meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
            slots=self._slots,
            src=self._src,
            jur=self._jur,
            index=faiss.serialize_index(self._index),
        )
        tmp = self._state_path.with_suffix(f".tmp{os.getpid()}")
        try:
            tmp.write_bytes(buffer.getbuffer())
            os.replace(tmp, self._state_path)
        except BaseException:  # a full disk leaves no partial temporary file behind
            tmp.unlink(missing_ok=True)
            raise

    @_locked
    def purge(self) -> PurgeReport:
        """Removed vectors were zeroed in the raw file and dropped from the index at removal;
        here the file is fsynced and the state rewritten without them. When removed slots
        make up over a quarter of the file it is also compacted (and IVF-PQ retrained)."""
        report = PurgeReport(self.name, self._removed_since_purge)
        report.actions.append("removed vectors overwritten with zeros at removal")
        live = np.flatnonzero(self._slots >= 0)
        if len(self._slots) - len(live) > len(self._slots) // 4:
            vectors = np.array(self._raw[live])
            ids, src, jur = self._slots[live], self._src[live], self._jur[live]
            labels, trained = self._labels, self._trained_on
            self._clear()  # truncates the file
            self._labels = labels
            self._open_raw(len(live))
            self._raw[: len(live)] = vectors
            self._slots, self._src, self._jur = ids, src, jur
            self._index.add_with_ids(vectors, np.arange(len(live), dtype=np.int64))
            self._live = len(live)
            if trained and self._live >= self.ivf_threshold:
                self._train()
            report.actions.append(f"raw vectors compacted to {len(live)} rows")
        if isinstance(self._raw, np.memmap):
            self._raw.flush()
            with open(self._raw_path, "rb+") as f:
                os.fsync(f.fileno())
            report.actions.append("raw vectors fsynced")
        self._removed_since_purge = 0
        self.save()
        if self._state_path is not None:
            with open(self._state_path, "rb") as f:
                os.fsync(f.fileno())
            report.actions.append("index state rewritten and fsynced")
        return report

    @_locked
    def close(self) -> None:
        if isinstance(self._raw, np.memmap):
            self._raw.flush()

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.name,
            "mode": self.mode,
            "faces": self._live,
            "nlist": int(self._index.nlist) if self._trained_on else None,
            "codes": f"PQ{PQ_M}x{PQ_BITS} fast-scan" if self._trained_on else None,
            "nprobe": self.nprobe or None,
            "rerank": self.rerank if self._trained_on else None,
            "trained_on": self._trained_on or None,
        }
