"""The index backends inside facewarden: filtered search, migration between backends,
the logged physical purge, and pgvector's deletion in the same transaction as the record."""

from __future__ import annotations

import numpy as np
from sqlalchemy import text
from test_delete_and_index import media_id_of, search_ids

from facewarden.adapters.imaging import decode_image
from facewarden.adapters.index.base import FaceLabel
from facewarden.core.filters import SearchFilter
from facewarden.services.app import Facewarden

from conftest import PROBES, REFERENCE, add_source, last_event, make_settings, pg_database_url


def _two_jurisdictions(fw, admin):
    add_source(fw, admin, "fr-press", jurisdiction="FR")
    fw.ingest.run(admin, [REFERENCE / "obama2.jpg"], "fr-press")


def _sources(res):
    return {c.source for f in res.faces for c in f.candidates}


def test_search_filtered_by_jurisdiction_or_source_is_exact_and_logged(gallery_fw, admin):
    _two_jurisdictions(gallery_fw, admin)
    probe = (PROBES / "obama1.jpg").read_bytes()
    both = gallery_fw.search.search(admin, probe, case="CASE-1")
    assert _sources(both) == {"press", "fr-press"}
    fr = gallery_fw.search.search(
        admin, probe, case="CASE-1", where=SearchFilter.of(jurisdictions=["FR"])
    )
    assert _sources(fr) == {"fr-press"}
    event = last_event(gallery_fw)
    assert event.action == "search"
    assert '"jurisdictions": ["FR"]' in event.details or "FR" in str(event.details)
    de = gallery_fw.search.search(admin, probe, case="CASE-1", where=SearchFilter.of(["press"]))
    assert _sources(de) == {"press"}
    none = gallery_fw.search.search(
        admin, probe, case="CASE-1", where=SearchFilter.of(jurisdictions=["NL"])
    )
    assert none.faces[0].no_candidate


def test_stale_index_entries_are_dropped_and_the_search_looks_further(gallery_fw, admin):
    """The index lags the database (vectors of faces the database no longer holds, all
    nearer than any real face): none is returned, and the search widens until it has its
    top-k real candidates, the same as without the stale entries."""
    probe = (REFERENCE / "obama2.jpg").read_bytes()
    before = gallery_fw.search.search(admin, probe, case="CASE-1", threshold=1.5, top_k=3)
    face = gallery_fw.pipeline.process(decode_image(probe, max_pixels=10**8), enrol=False).faces[0]
    stale = np.arange(10_000, 10_040)
    gallery_fw.index.add(
        stale,
        np.repeat(face.descriptor[None, :], len(stale), axis=0),
        [FaceLabel("press", "DE")] * len(stale),
    )
    after = gallery_fw.search.search(admin, probe, case="CASE-1", threshold=1.5, top_k=3)
    ids = [c.face_id for c in after.faces[0].candidates]
    assert ids == [c.face_id for c in before.faces[0].candidates] and len(ids) == 3
    assert not set(ids) & set(stale.tolist())


def test_migrate_to_qdrant_gives_the_same_candidates_and_deletions_hold(
    gallery_fw, admin, pipeline
):
    before = search_ids(gallery_fw, admin)
    result = gallery_fw.gallery.migrate_index(admin, "qdrant")
    assert result == {"from": "faiss", "to": "qdrant", "faces": 5}
    assert last_event(gallery_fw).action == "index.migrate"
    gallery_fw.close()
    moved = Facewarden(gallery_fw.settings.model_copy(update={"index": "qdrant"}), pipeline)
    assert moved.index.name == "qdrant" and len(moved.index) == 5
    after = search_ids(moved, admin)
    assert [i for i, _ in after] == [i for i, _ in before]
    np.testing.assert_allclose([d for _, d in after], [d for _, d in before], atol=1e-4)
    moved.gallery.delete_media(admin, [media_id_of(moved, "obama")])
    assert len(moved.index) == 4
    assert before[0][0] not in [i for i, _ in search_ids(moved, admin)]
    moved.close()


def test_physical_purge_is_logged_with_what_it_did(gallery_fw, admin):
    gallery_fw.gallery.delete_media(admin, [media_id_of(gallery_fw, "obama")])
    report = gallery_fw.gallery.purge_index(admin)
    assert report["removed_since_last_purge"] == 1 and report["purged_at"]
    event = last_event(gallery_fw)
    assert event.action == "index.purge" and event.seq == report["audit_seq"]
    assert gallery_fw.gallery.purge_index(admin)["removed_since_last_purge"] == 0


def test_purge_names_the_deletions_it_covers_and_erasure_requests_report_it(gallery_fw, admin):
    gallery_fw.gallery.delete_media(admin, [media_id_of(gallery_fw, "biden")])
    receipt = gallery_fw.subjects.erase(admin, (REFERENCE / "obama.jpg").read_bytes())
    deleted = last_event(gallery_fw, "delete").seq
    assert gallery_fw.gallery.pending_erasures() == [deleted, receipt["audit_seq"]]
    [request] = gallery_fw.subjects.requests(admin)
    assert request["bytes_purged_at"] is None
    report = gallery_fw.gallery.purge_index(admin)
    assert report["covers_audit_seqs"] == [deleted, receipt["audit_seq"]]
    assert any("SQLite" in a or "PostgreSQL" in a for a in report["actions"])
    [request] = gallery_fw.subjects.requests(admin)
    assert request["bytes_purged_at"] == report["purged_at"]
    assert request["purge_audit_seq"] == report["audit_seq"]
    assert gallery_fw.gallery.pending_erasures() == []
    assert gallery_fw.gallery.purge_index(admin, only_if_pending=True) is None


def test_the_servers_maintenance_round_expires_then_purges_the_bytes(gallery_fw, admin):
    from facewarden.web.server import RetentionTimer

    timer = RetentionTimer(gallery_fw, 60)
    assert timer.tick()["purge"] is None  # nothing deleted, nothing to purge
    with gallery_fw.writes() as s, s.begin():
        s.execute(text("UPDATE media SET expires_at = ingested_at"))
    done = timer.tick()
    assert done["retention"]["faces"] == 5
    assert done["purge"]["covers_audit_seqs"] == [done["retention"]["audit_seq"]]
    assert last_event(gallery_fw).action == "index.purge"
    assert len(gallery_fw.index) == 0


def test_pgvector_deletes_a_vector_in_the_same_transaction_as_its_face(
    tmp_path, pg_server, pipeline
):
    settings = make_settings(
        tmp_path / "pg",
        pg_database_url(pg_server),
        index="pgvector",
        pgvector_m=8,
        pgvector_ef_construction=40,
        pgvector_build_memory="64MB",
    )
    fw, _ = Facewarden.init(settings, admin_name="admin", pipeline=pipeline)
    admin = fw.actor(name="admin")
    add_source(fw, admin)
    from conftest import GALLERY, open_case

    fw.ingest.run(admin, [GALLERY], "press")
    open_case(fw, admin)
    assert fw.index.name == "pgvector" and len(fw.index) == 5
    ranked = search_ids(fw, admin)
    obama = media_id_of(fw, "obama")
    with fw.sessions() as s:
        obama_face = s.execute(text(f"SELECT id FROM faces WHERE media_id = {obama}")).scalar()
    assert ranked[0][0] == obama_face
    with fw.engine.begin() as con:  # bypass the service: the foreign key does the work
        con.execute(text(f"DELETE FROM faces WHERE media_id = {obama}"))
        assert (
            con.scalar(text(f"SELECT count(*) FROM face_vectors WHERE face_id = {obama_face}")) == 0
        )
    after = [i for i, _ in search_ids(fw, admin)]
    assert obama_face not in after
    fw.close()
    # A rebuild loads every row first and builds the HNSW graph once, at the end.
    fw2 = Facewarden(settings, pipeline=pipeline)
    has_hnsw = "SELECT to_regclass('face_vectors_hnsw') IS NOT NULL"
    fw2.index.reset()
    with fw2.engine.connect() as con:
        assert con.scalar(text(has_hnsw)) is False
    assert fw2.rebuild_index() == 4
    with fw2.engine.connect() as con:
        assert con.scalar(text(has_hnsw)) is True
        built = con.scalar(
            text("SELECT indexdef FROM pg_indexes WHERE indexname = 'face_vectors_hnsw'")
        )
    assert "m='8'" in built and "ef_construction='40'" in built  # the configured graph
    assert [i for i, _ in search_ids(fw2, admin)] == after
    fw2.close()
