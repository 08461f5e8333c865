"""Embedded default: FAISS in process, persisted beside the database.

Small galleries are searched exactly (``IndexFlatL2``). Once a gallery holds
``ivf_threshold`` faces it switches to IVF-PQ: 32-byte codes in RAM (64 sub-quantisers of 4
bits, scanned with FAISS's SIMD "fast-scan" kernels, 3-4x faster than 8-bit codes at equal
recall after the re-rank) propose ``rerank`` candidates, which are re-scored exactly from
the raw vectors, held in RAM (512 bytes per face, plus 32 for its code). The
coarse quantiser is retrained automatically whenever the gallery has grown fourfold since
the last training.

A filter planner serves narrow filters (few faces admitted: at most ``exact_subset``, or as
many raw vectors as cost what the IVF scan costs when the gallery is larger) by an exact
scan of just the admitted faces' raw vectors; broad filters (10% of faces or more) by an
unfiltered search for proportionally more candidates, filtered before the re-rank; those in
between go through the index with a FAISS ID selector.

On disk nothing is in plaintext: the raw vectors are persisted as AES-256-GCM sealed chunks
of ``CHUNK_ROWS`` vectors (``chunks/NNNNNN.sealed``) and the rest (ids, labels, the FAISS
index with its codes) as one sealed state file that records each chunk's generation and
tag, all under a key derived from the deployment's template key (``sealed``). Loading
verifies everything; what does not verify (truncated, altered, replayed, another key, files
of an earlier version) is discarded, reported in ``load_problem``, and the index is rebuilt
from the database by the caller.

Removal is logical and physical at once: the face leaves the index, its raw vector is
overwritten with zeros, and, before ``remove`` returns, the chunks holding it and the state
are sealed again and fsynced, so the removed bytes are gone from the current files.
``purge`` also compacts the vectors when removed slots make up over a quarter of them.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import faiss
import numpy as np

from facewarden.adapters.index.base import (
    FaceLabel,
    IndexFilter,
    PurgeReport,
    empty_result,
    pad_result,
)
from facewarden.adapters.index.sealed import (
    CHUNK_MAGIC,
    STATE_MAGIC,
    Header,
    SealError,
    private_dir,
    seal,
    shred,
    tag_of,
    unseal,
    write_durably,
)

log = logging.getLogger(__name__)

STATE_VERSION = 2  # 1: plaintext state.npz and memory-mapped vectors.f32
CHUNK_ROWS = 4096  # vectors per sealed chunk (2 MB at 128 dimensions)
LEGACY_FILES = ("vectors.f32", "state.npz")
PQ_M, PQ_BITS = 64, 4  # 64 sub-quantisers of 4 bits: 32 bytes per face, fast-scan layout
NPROBE_SHARE = 3 / 16  # lists visited by default: recall@10 0.99 at 1M after the re-rank
RAW_COST = 4  # an exact distance from a raw vector costs about 4 fast-scan code distances
BROAD_SHARE = 0.1  # filters admitting at least this share of faces post-filter the index
FILTER_COPY_BYTES = 32 * 2**20  # an exactly scanned filter's vectors kept contiguous up to this


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _locked(method: _Method) -> _Method:
    @functools.wraps(method)
    def wrapper(self: FaissIndex, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return cast(_Method, wrapper)


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
        key: bytes | None = None,
        ivf_threshold: int = 100_000,
        nprobe: int = 0,
        rerank: int = 200,
        exact_subset: int = 50_000,
        chunk_rows: int = CHUNK_ROWS,
    ) -> None:
        """``directory`` None keeps everything in memory (evaluation, tests); otherwise
        ``key`` (32 bytes, ``keyderive.INDEX_FILE`` of the template key) seals the files."""
        if directory is not None and (key is None or len(key) != 32):
            raise ValueError("an index kept on disk needs a 32-byte key to seal its files")
        self.directory = directory
        self.dimension = dimension
        self.ivf_threshold = ivf_threshold
        self.nprobe_setting = nprobe
        self.rerank = rerank
        self.exact_subset = exact_subset
        self.chunk_rows = chunk_rows
        self._key = key
        self._lock = threading.RLock()
        self._removed_since_purge = 0
        self._version = 0  # bumped by every change; keys the filter-mask cache
        self._filters: dict[IndexFilter, tuple[int, _Admitted]] = {}
        self._generation = 0  # of the files last written; sealed into each
        self._chunk_gens = np.zeros(0, np.uint64)
        self._chunk_tags = np.zeros((0, 16), np.uint8)
        self._dirty: set[int] = set()  # chunks changed since they were last sealed
        self._saved_version = -1  # ``_version`` when the files were last written
        self.load_problem: str | None = None
        """Why the files on disk were discarded at load (None: loaded, or none there)."""
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
        self._raw = np.zeros((0, self.dimension), np.float32)
        self._dirty = set()
        self._chunk_gens = np.zeros(0, np.uint64)  # every chunk is written at the next save
        self._chunk_tags = np.zeros((0, 16), np.uint8)

    def _files(self) -> tuple[Path, bytes]:
        """The directory and the sealing key of an index kept on disk."""
        if self.directory is None or self._key is None:
            raise RuntimeError("this FAISS index is kept in memory only: it has no files")
        return self.directory, self._key

    @property
    def _chunk_dir(self) -> Path:
        return self._files()[0] / "chunks"

    @property
    def _state_path(self) -> Path:
        return self._files()[0] / "state.sealed"

    def _chunk_path(self, chunk: int) -> Path:
        return self._chunk_dir / f"{chunk:06d}.sealed"

    def _chunks(self, rows: int | None = None) -> int:
        rows = len(self._slots) if rows is None else rows
        return -(-rows // self.chunk_rows)

    def _grow(self, rows: int, *, exact: bool = False) -> None:
        """Room for ``rows`` raw vectors: by half again (or exactly), in whole chunks."""
        if rows <= len(self._raw):
            return
        capacity = rows if exact else max(rows, len(self._raw) * 3 // 2)
        capacity = self._chunks(capacity) * self.chunk_rows
        raw = np.zeros((capacity, self.dimension), np.float32)
        raw[: len(self._slots)] = self._raw[: len(self._slots)]
        self._raw = raw

    @_locked
    def reserve(self, rows: int) -> None:
        """Allocate the raw vectors of ``rows`` faces at once (a rebuild knows how many)."""
        self._grow(rows, exact=True)

    def _mark(self, slots: np.ndarray) -> None:
        self._dirty.update(np.unique(np.asarray(slots) // self.chunk_rows).tolist())

    def _load(self) -> bool:
        directory = self.directory
        if directory is None:
            return False
        legacy = [directory / name for name in LEGACY_FILES if (directory / name).exists()]
        if legacy:
            for path in legacy:
                shred(path)
            self._discard("plaintext index files of an earlier version found and erased")
            return False
        if not self._state_path.is_file():
            if self._chunk_dir.is_dir() and any(self._chunk_dir.iterdir()):
                self._discard("index state file missing")
            return False
        try:
            self._read()
        except Exception as exc:  # a damaged cache is not an error: it is rebuilt
            self._discard(f"{type(exc).__name__}: {exc}")
            return False
        if self._trained_on and not isinstance(self._index, faiss.IndexIVFPQFastScan):
            log.info("index state holds 8-bit PQ codes: retraining with fast-scan codes")
            self._train()  # from the raw vectors: no templates decrypted
            self._version += 1  # saved at the next save
        return True

    def _discard(self, problem: str) -> None:
        """Delete the files that did not verify; the caller rebuilds from the database."""
        log.warning("index files at %s discarded (%s): rebuilt", self.directory, problem)
        self.load_problem = problem
        self._state_path.unlink(missing_ok=True)
        if self._chunk_dir.is_dir():
            for path in self._chunk_dir.iterdir():
                path.unlink(missing_ok=True)

    def _read(self) -> None:
        """Unseal and check the state and every chunk; raises if anything does not verify."""
        key = self._files()[1]
        header, plaintext = unseal(key, self._state_path.read_bytes(), STATE_MAGIC)
        with np.load(io.BytesIO(plaintext), allow_pickle=False) as state:
            meta = json.loads(bytes(state["meta"]).decode())
            if meta["version"] != STATE_VERSION or meta["dimension"] != self.dimension:
                raise SealError(f"state of version {meta['version']}, {meta['dimension']}-d")
            if meta["generation"] != header.generation or meta["chunk_rows"] != self.chunk_rows:
                raise SealError("state header and content disagree")
            slots = state["slots"].astype(np.int64)
            src = state["src"].astype(np.int32)
            jur = state["jur"].astype(np.int32)
            gens = state["chunk_gens"].astype(np.uint64)
            tags = state["chunk_tags"].astype(np.uint8)
            index = faiss.deserialize_index(state["index"])
        del plaintext
        chunks = self._chunks(len(slots))
        if len(gens) != chunks or len(tags) != chunks or not len(src) == len(jur) == len(slots):
            raise SealError("state inconsistent with its chunk count")
        raw = np.zeros((chunks * self.chunk_rows, self.dimension), np.float32)
        for chunk in range(chunks):
            blob = self._chunk_path(chunk).read_bytes()
            head, data = unseal(key, blob, CHUNK_MAGIC)
            rows = min(self.chunk_rows, len(slots) - chunk * self.chunk_rows)
            if (
                head.chunk != chunk
                or head.generation != int(gens[chunk])
                or head.rows != rows
                or tag_of(blob) != tags[chunk].tobytes()
            ):
                raise SealError(f"chunk {chunk} is not the one the state sealed (replayed?)")
            start = chunk * self.chunk_rows
            raw[start : start + rows] = np.frombuffer(data, "<f4").reshape(rows, self.dimension)
        live = int((slots >= 0).sum())
        if index.ntotal != live:
            raise SealError("index and slots disagree")
        self._slots, self._src, self._jur, self._index, self._raw = slots, src, jur, index, raw
        self._labels = _Labels(meta["sources"], meta["jurisdictions"])
        self._trained_on = meta["trained_on"]
        self._removed_since_purge = meta.get("removed_since_purge", 0)
        self._live = live
        self._generation = header.generation
        self._chunk_gens, self._chunk_tags = gens, tags
        self._dirty = set()
        self._saved_version = self._version

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
        self._grow(start + len(ids))
        self._raw[start : start + len(ids)] = vectors
        self._mark(slots)
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
    def _nlist(self) -> int:
        """Inverted lists of the trained (IVF) index."""
        if not isinstance(self._index, faiss.IndexIVF):
            raise RuntimeError(f"the index is {type(self._index).__name__}, not IVF-PQ")
        return self._index.nlist

    @property
    def nprobe(self) -> int:
        if not self._trained_on:
            return 0
        nlist = self._nlist
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
        codes = self._live * self.nprobe // self._nlist
        return max(self.exact_subset, codes // RAW_COST)

    @_locked
    def remove(self, ids: np.ndarray) -> int:
        """Erase: when this returns, the faces' vectors are zeroed in RAM and in the sealed
        files (their chunks and the state, which holds the codes, sealed again, fsynced)."""
        removed = self._remove(ids, erasure=True)
        if removed and self.directory is not None:
            self._persist()
        return removed

    def _remove(self, ids: np.ndarray, *, erasure: bool) -> int:
        if len(ids) == 0 or self._live == 0:
            return 0
        slots = np.flatnonzero(np.isin(self._slots, np.asarray(ids, np.int64)))
        if len(slots) == 0:
            return 0
        # faiss's stub lists only remove_ids(IDSelector); its wrapper takes int64 ids too.
        self._index.remove_ids(slots.astype(np.int64))  # type: ignore[arg-type]
        self._raw[slots] = 0.0  # the bytes go with the face, not at some later compaction
        self._mark(slots)
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
                admitted_slots = (slots >= 0) & admitted.mask[np.maximum(slots, 0)]
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
            if admitted.bitmap is None:  # the planner scans such a filter's slots exactly
                raise RuntimeError("a filter planned for an exact scan reached the index")
            self._bitmap = admitted.bitmap  # kept alive for the call
            selector = faiss.IDSelectorBitmap(len(admitted.mask), faiss.swig_ptr(self._bitmap))
        params: faiss.SearchParameters
        if self._trained_on:
            params = ivf = faiss.SearchParametersIVF()
            ivf.nprobe = self.nprobe
        elif selector is not None:
            params = faiss.SearchParameters()
        else:
            return None
        params.sel = selector
        return params

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
    def vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of those of ``ids`` held, as the index holds them."""
        slots = np.flatnonzero(np.isin(self._slots, np.asarray(ids, np.int64)))
        return self._slots[slots].copy(), np.array(self._raw[slots])

    @_locked
    def save(self) -> None:
        """Seal what changed since the last save (nothing, when nothing did: an erasure has
        already sealed its change)."""
        if self.directory is not None and self._saved_version != self._version:
            self._persist()

    def _persist(self) -> None:
        """Seal the changed chunks and then the state under a new generation, each written
        atomically and fsynced; drop chunk files beyond the last."""
        directory, key = self._files()
        private_dir(directory)
        private_dir(self._chunk_dir)
        generation = self._generation + 1
        chunks = self._chunks()
        gens = np.zeros(chunks, np.uint64)
        tags = np.zeros((chunks, 16), np.uint8)
        kept = min(chunks, len(self._chunk_gens))
        gens[:kept], tags[:kept] = self._chunk_gens[:kept], self._chunk_tags[:kept]
        for chunk in sorted(c for c in self._dirty | set(range(kept, chunks)) if c < chunks):
            start = chunk * self.chunk_rows
            rows = min(self.chunk_rows, len(self._slots) - start)
            header = Header(CHUNK_MAGIC, generation, chunk, rows)
            blob = seal(key, header, self._raw[start : start + rows].tobytes())
            write_durably(self._chunk_path(chunk), blob)
            gens[chunk] = generation
            tags[chunk] = np.frombuffer(tag_of(blob), np.uint8)
        meta = {
            "version": STATE_VERSION,
            "dimension": self.dimension,
            "generation": generation,
            "chunk_rows": self.chunk_rows,
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
            chunk_gens=gens,
            chunk_tags=tags,
            index=faiss.serialize_index(self._index),
        )
        header = Header(STATE_MAGIC, generation, 0, len(self._slots))
        write_durably(self._state_path, seal(key, header, buffer.getbuffer()))
        del buffer
        for path in self._chunk_dir.iterdir():
            if not path.name.endswith(".sealed") or int(path.name.split(".")[0]) >= chunks:
                path.unlink(missing_ok=True)  # beyond the last chunk, or a stale temporary
        self._generation, self._chunk_gens, self._chunk_tags = generation, gens, tags
        self._dirty = set()
        self._saved_version = self._version

    @_locked
    def purge(self) -> PurgeReport:
        """Removed vectors were zeroed and their chunks sealed again at removal; here, when
        removed slots make up over a quarter of them, the vectors are compacted (and IVF-PQ
        retrained), and every file is sealed again."""
        report = PurgeReport(self.name, self._removed_since_purge)
        report.actions.append("removed vectors zeroed and their chunks re-sealed at removal")
        live = np.flatnonzero(self._slots >= 0)
        if len(self._slots) - len(live) > len(self._slots) // 4:
            vectors = np.array(self._raw[live])
            ids, src, jur = self._slots[live], self._src[live], self._jur[live]
            labels, trained = self._labels, self._trained_on
            self._clear()
            self._labels = labels
            self._grow(len(live), exact=True)
            self._raw[: len(live)] = vectors
            self._slots, self._src, self._jur = ids, src, jur
            self._index.add_with_ids(vectors, np.arange(len(live), dtype=np.int64))
            self._live = len(live)
            if trained and self._live >= self.ivf_threshold:
                self._train()
            report.actions.append(f"raw vectors compacted to {len(live)} rows")
        self._removed_since_purge = 0
        if self.directory is not None:
            self._dirty = set(range(self._chunks()))
            self._persist()
            report.actions.append(
                f"{self._chunks()} vector chunks and the index state sealed again and fsynced"
            )
        return report

    @_locked
    def close(self) -> None:
        """Nothing to release: the vectors are in RAM, the files written at each save."""

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.name,
            "mode": self.mode,
            "faces": self._live,
            "nlist": self._nlist if self._trained_on else None,
            "codes": f"PQ{PQ_M}x{PQ_BITS} fast-scan" if self._trained_on else None,
            "nprobe": self.nprobe or None,
            "rerank": self.rerank if self._trained_on else None,
            "trained_on": self._trained_on or None,
            "storage": "RAM; AES-256-GCM sealed files" if self.directory else "RAM only",
        }
