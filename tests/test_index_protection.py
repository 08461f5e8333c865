"""Template protection in the vector index (issue 18): subkeys, the keyed rotation every
backend sits behind, sealed FAISS files, a damaged or wrong index detected and rebuilt, and
an erasure through the real server leaving no byte of the template in any file."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from test_cli import cli  # noqa: F401 (fixture)
from test_index_backends import _labels, _vectors, open_index  # noqa: F401 (fixture)
from webserver import running_server

from facewarden.adapters.crypto import load_key
from facewarden.adapters.imaging import decode_image
from facewarden.adapters.index.faiss_index import FaissIndex
from facewarden.adapters.index.protection import KeyedRotation, TransformedIndex
from facewarden.adapters.index.sealed import CHUNK_MAGIC, unseal
from facewarden.adapters.keyderive import INDEX_FILE, INDEX_TRANSFORM, derive_key
from facewarden.adapters.storage.tables import AuditEvent
from facewarden.services.app import Facewarden

from conftest import GALLERY, PROBES, make_settings

KEY_A, KEY_B = bytes(range(32)), bytes(range(1, 33))


# -- subkeys and the rotation ------------------------------------------------------------
def test_subkeys_differ_by_purpose_and_by_master_key_and_are_stable():
    a_file, a_rot = derive_key(KEY_A, INDEX_FILE), derive_key(KEY_A, INDEX_TRANSFORM)
    assert len(a_file) == len(a_rot) == 32 and a_file != a_rot
    assert KEY_A not in (a_file, a_rot)
    assert derive_key(KEY_A, INDEX_FILE) == a_file
    assert derive_key(KEY_B, INDEX_FILE) != a_file
    with pytest.raises(ValueError, match="purpose"):
        derive_key(KEY_A, "audit-v1")


def test_the_rotation_is_orthogonal_secret_and_renewable():
    q = KeyedRotation.for_deployment(KEY_A)
    m = q.matrix.astype(np.float64)
    np.testing.assert_allclose(m @ m.T, np.eye(128), atol=1e-5)
    assert np.array_equal(KeyedRotation.for_deployment(KEY_A).matrix, q.matrix)  # stable
    other = KeyedRotation.for_deployment(KEY_B).matrix
    assert np.abs(other - q.matrix).max() > 0.1  # another key, another rotation
    x = _vectors(50)
    np.testing.assert_allclose(q.invert(q.apply(x)), x, atol=1e-6)
    d_raw = np.linalg.norm(x[:, None] - x[None], axis=2)
    y = q.apply(x)
    np.testing.assert_allclose(np.linalg.norm(y[:, None] - y[None], axis=2), d_raw, atol=1e-5)
    assert np.abs(y - x).max() > 0.05  # not the identity


def test_every_backend_ranks_exactly_as_on_the_raw_vectors(open_index):  # noqa: F811
    """Behind the rotation, each backend returns the ids, in the order, and the distances
    of an exact search over the raw vectors."""
    index = TransformedIndex(open_index(), KeyedRotation.for_deployment(KEY_A))
    n = 1500
    vectors = _vectors(n)
    ids = np.arange(1, n + 1, dtype=np.int64) * 7
    index.add(ids, vectors, _labels(n))
    index.save()
    queries = np.concatenate([vectors[:5], _vectors(10, seed=9)])
    dists, found = index.search(queries, 10, exact=True)
    for q, d, f in zip(queries, dists, found, strict=True):
        raw = np.linalg.norm(vectors - q, axis=1)
        order = np.argsort(raw, kind="stable")[:10]
        assert f.tolist() == ids[order].tolist()
        np.testing.assert_allclose(d, raw[order], atol=2e-5)
    got_ids, got = index.vectors(ids[:20])
    np.testing.assert_allclose(got[np.argsort(got_ids)], vectors[:20], atol=1e-5)
    inner_ids, inner = index.inner.vectors(ids[:20])
    assert np.abs(inner[np.argsort(inner_ids)] - vectors[:20]).max() > 0.05  # not stored raw


def test_an_index_cannot_be_matched_with_raw_templates_or_another_deployments():
    """Searching deployment A's index with raw templates, or with deployment B's rotation of
    them, finds the face itself about as often as chance; A's own rotation always does."""
    n = 2000
    vectors = _vectors(n)
    ids = np.arange(n, dtype=np.int64)
    a = FaissIndex(None)
    a.add(ids, KeyedRotation.for_deployment(KEY_A).apply(vectors), _labels(n))
    probes = vectors[:200]
    _, own = a.search(KeyedRotation.for_deployment(KEY_A).apply(probes), 1)
    assert (own[:, 0] == ids[:200]).all()
    for queries in (probes, KeyedRotation.for_deployment(KEY_B).apply(probes)):
        _, found = a.search(queries, 1)
        assert (found[:, 0] == ids[:200]).mean() < 0.05


# -- in the service ------------------------------------------------------------------------
def _descriptor(pipeline, path: Path) -> np.ndarray:
    image = decode_image(path.read_bytes(), max_pixels=10**8)
    return pipeline.process(image, enrol=False).faces[0].descriptor


def test_search_results_are_exactly_those_on_the_raw_templates(gallery_fw, admin):
    """Ids, order and distances of the candidates equal an exact search over the decrypted
    templates, while the index holds none of those templates."""
    ids = np.sort(gallery_fw.index.ids())
    ids, templates = gallery_fw.load_templates(ids.tolist())
    for probe in ("obama1.jpg", "alex_lacamoire1.jpg", "kit_with_rose.jpg"):
        face = _descriptor(gallery_fw.pipeline, PROBES / probe)
        result = gallery_fw.search.search(
            admin, (PROBES / probe).read_bytes(), case="CASE-1", threshold=1.5
        )
        got = [(c.face_id, c.distance) for c in result.faces[0].candidates]
        raw = np.linalg.norm(templates - face, axis=1)
        want = [(int(ids[i]), round(float(raw[i]), 4)) for i in np.argsort(raw, kind="stable")]
        assert got == want[: len(got)] and len(got) == 5
    stored_ids, stored = gallery_fw.index.inner.vectors(ids)
    stored = stored[np.argsort(stored_ids)]
    assert np.linalg.norm(stored - templates, axis=1).min() > 0.3
    d, _ = gallery_fw.index.inner.search(templates, 1)  # raw templates against the index
    assert d[:, 0].min() > 0.3
    assert "rotation" in str(gallery_fw.index.describe()["transform"])


def test_rekeying_renews_the_index_without_reporting_damage(gallery_fw, admin, pipeline):
    """A new key (template key rotation, or renewing a leaked index): the index is rebuilt
    under the new subkeys; the old files no longer open under the new key and vice versa."""
    probe = (PROBES / "obama1.jpg").read_bytes()

    def candidates() -> list[int]:
        result = gallery_fw.search.search(admin, probe, case="CASE-1")
        return [c.face_id for c in result.faces[0].candidates]

    before = candidates()
    old_rows = gallery_fw.index.inner.vectors(gallery_fw.index.ids())[1]
    new_key = os.urandom(32)
    assert gallery_fw.rekey_index(new_key) == 5
    assert candidates() == before and not _damaged_events(gallery_fw)
    new_rows = gallery_fw.index.inner.vectors(gallery_fw.index.ids())[1]
    assert np.abs(np.sort(new_rows, axis=0) - np.sort(old_rows, axis=0)).max() > 0.05
    directory = gallery_fw.settings.index_dir / "faiss"
    assert FaissIndex(directory, key=derive_key(new_key, INDEX_FILE)).load_problem is None
    gallery_fw.close()


def _damaged_events(fw: Facewarden) -> list[AuditEvent]:
    with fw.sessions() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == "index.damaged")))


@pytest.mark.parametrize("damage", ["truncated", "perturbed-bits", "valid-but-wrong"])
def test_a_damaged_index_is_detected_audited_and_rebuilt(gallery_fw, admin, pipeline, damage):
    """Truncated or altered files fail to verify; vectors altered by someone holding the key
    (a still-valid file) fail the consistency check against the database. Either way the
    app opens, ``stats`` answers, the event is audited, and searches find everyone again."""
    probe = (PROBES / "obama1.jpg").read_bytes()
    before = gallery_fw.search.search(admin, probe, case="CASE-1")
    state = gallery_fw.settings.index_dir / "faiss" / "state.sealed"
    if damage == "valid-but-wrong":
        inner = gallery_fw.index.inner
        inner._raw[: len(inner._slots)] += 0.05  # noise, then sealed properly with the key
        inner._mark(np.arange(len(inner._slots)))
        inner._persist()
    gallery_fw.close()
    if damage == "truncated":
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    elif damage == "perturbed-bits":
        data = bytearray(state.read_bytes())
        data[-40] ^= 0x10
        state.write_bytes(bytes(data))
    reopened = Facewarden(gallery_fw.settings, pipeline)
    stats = reopened.stats()
    assert stats["index_size"] == stats["faces"] == 5
    events = _damaged_events(reopened)
    assert len(events) == 1 and events[0].outcome == "error" and events[0].actor == "system"
    after = reopened.search.search(admin, probe, case="CASE-1")
    assert [c.face_id for c in after.faces[0].candidates] == [
        c.face_id for c in before.faces[0].candidates
    ]
    reopened.close()
    again = Facewarden(gallery_fw.settings, pipeline)  # rebuilt files verify
    assert again.stats()["index_size"] == 5 and len(_damaged_events(again)) == 1


@pytest.mark.slow  # the CLI in subprocesses
def test_cli_stats_and_rebuild_survive_a_truncated_index(gallery_cli, tmp_path):
    """The issue's sequence: ``stats`` and ``index rebuild`` over a truncated state file
    printed tracebacks. Now: exit 0, no traceback, the rebuild logged."""
    state = tmp_path / "data" / "index" / "faiss" / "state.sealed"
    state.write_bytes(state.read_bytes()[:1000])
    stats = gallery_cli("stats", "--json")
    assert "Traceback" not in stats.stderr and json.loads(stats.stdout)["index_size"] == 5
    state.write_bytes(b"PK\x03\x04 not a zip file")
    rebuilt = gallery_cli("index", "rebuild")
    assert "Traceback" not in rebuilt.stderr + rebuilt.stdout
    lines = gallery_cli("audit", "export").stdout.splitlines()
    assert [json.loads(line)["action"] for line in lines].count("index.damaged") == 2


def test_a_qdrant_index_built_under_another_key_is_rebuilt(gallery_fw, admin, pipeline):
    """Vectors another deployment (another template key) put in the backend fail the
    consistency check: the index is rebuilt under this deployment's rotation."""
    settings = gallery_fw.settings.model_copy(update={"index": "qdrant"})
    gallery_fw.gallery.migrate_index(admin, "qdrant")
    gallery_fw.close()
    app = Facewarden(settings, pipeline)
    ids, templates = app.load_templates(np.sort(app._index.ids()).tolist())
    app._index.inner.add(ids, KeyedRotation(bytes(32)).apply(templates), _labels(len(ids)))
    app.close()
    reopened = Facewarden(settings, pipeline)
    assert len(reopened.index) == 5 and len(_damaged_events(reopened)) == 1
    found, held = reopened.index.vectors(ids)
    np.testing.assert_allclose(held[np.argsort(found)], templates, atol=1e-5)
    reopened.close()


# -- erasure through the real server -------------------------------------------------------
def _forms(vector: np.ndarray) -> list[bytes]:
    """Byte strings that would betray ``vector`` in a file: its first 8 values as float32,
    float16 and float64 (a prefix of any copy of the vector, whatever its length)."""
    return [vector[:8].astype(dtype).tobytes() for dtype in ("<f4", "<f2", "<f8")]


def _files(root: Path) -> Iterator[Path]:
    return (p for p in root.rglob("*") if p.is_file())


def _chunk_rows(data_dir: Path, file_key: bytes) -> np.ndarray:
    """Every vector of the sealed FAISS chunks, unsealed with the key (an insider's view)."""
    chunks = sorted((data_dir / "index" / "faiss" / "chunks").iterdir())
    return np.concatenate(
        [
            np.frombuffer(unseal(file_key, p.read_bytes(), CHUNK_MAGIC)[1], "<f4").reshape(-1, 128)
            for p in chunks
        ]
    )


@pytest.mark.slow  # a real server process
def test_erasure_through_the_server_leaves_no_template_bytes_in_any_file(tmp_path, pipeline):
    with running_server(tmp_path, pipeline) as server:
        data_dir = server.data_dir
        master = load_key(None, make_settings(data_dir, None).resolved_key_file)
        file_key = derive_key(master, INDEX_FILE)
        rotation = KeyedRotation.for_deployment(master)
        # The gallery's template, as ingest made it (with the ingest detector's box).
        from facewarden.services.models import Models

        ingest = Models(make_settings(data_dir, None), pipeline).ingest_pipeline
        template = _descriptor(ingest, GALLERY / "alex_lacamoire.jpg")
        rows = _chunk_rows(data_dir, file_key)
        nearest = int(np.argmin(np.linalg.norm(rows - rotation.apply(template), axis=1)))
        stored = rows[nearest].copy()  # the transformed template exactly as the index holds it
        assert np.abs(rotation.invert(stored)[0] - template).max() < 1e-5
        secrets = [*_forms(template), *_forms(stored), *_forms(rotation.invert(stored)[0])]

        def found_in_files() -> list[str]:
            return [
                f"{p.relative_to(data_dir)}"
                for p in _files(data_dir)
                if any(s in p.read_bytes() for s in secrets)
            ]

        assert found_in_files() == []
        modes = {p.stat().st_mode & 0o777 for p in _files(data_dir / "index")}
        assert modes == {0o600}
        dpo = server.client("dora")
        selfie = {"selfie": ("a.jpg", (PROBES / "alex_lacamoire1.jpg").read_bytes(), "image/jpeg")}
        receipt = dpo.post(
            "/api/v1/subjects/erase", files=selfie, data={"confirm": "true", "reference": "R-1"}
        )
        assert receipt.status_code == 200 and receipt.json()["faces"] == 1, receipt.text
        # At once (no purge): not in any file, and not in the index's plaintext either.
        assert found_in_files() == []
        after = _chunk_rows(data_dir, file_key)
        assert not (after == stored).all(axis=1).any()
        assert np.linalg.norm(after - stored, axis=1).min() > 0.1
        assert (after[nearest] == 0).all()
