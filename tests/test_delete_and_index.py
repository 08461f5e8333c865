"""Deleted faces never come back; the index is a rebuildable cache of the database."""

import numpy as np
import pytest
from sqlalchemy import delete, func, select

from facewarden.adapters.storage.tables import Face, FaceCrop, Media
from facewarden.core.errors import NotFound
from facewarden.services.app import Facewarden

from conftest import PROBE_LABELS, PROBES, REFERENCE, identity_of


def search_ids(fw, actor, probe="obama1.jpg"):
    res = fw.search.search(actor, (PROBES / probe).read_bytes(), case="CASE-1", threshold=1.5)
    return [(c.face_id, c.distance) for f in res.faces for c in f.candidates]


def media_id_of(fw, stem):
    with fw.sessions() as s:
        return next(m.id for m in s.scalars(select(Media)) if identity_of(m.path) == stem)


def test_deleted_media_never_appears_again(gallery_fw, admin):
    obama = media_id_of(gallery_fw, "obama")
    with gallery_fw.sessions() as s:
        obama_faces = set(s.scalars(select(Face.id).where(Face.media_id == obama)))
    assert obama_faces & {fid for fid, _ in search_ids(gallery_fw, admin)}
    counts = gallery_fw.gallery.delete_media(admin, [obama])
    assert counts == {"media": 1, "faces": 1, "crops": 1}
    assert not obama_faces & {fid for fid, _ in search_ids(gallery_fw, admin)}
    with gallery_fw.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Face).where(Face.id.in_(obama_faces))) == 0
        assert (
            s.scalar(
                select(func.count()).select_from(FaceCrop).where(FaceCrop.face_id.in_(obama_faces))
            )
            == 0
        )
    assert not set(gallery_fw.index.ids().tolist()) & obama_faces


def test_deleted_face_not_returned_even_if_index_lags(gallery_fw, admin):
    """Rows removed behind the index's back (e.g. a crash before the index save) stay gone."""
    obama = media_id_of(gallery_fw, "obama")
    assert len(gallery_fw.index) == 5  # this process has its index open before the rows vanish
    with gallery_fw.sessions.begin() as s:
        ids = list(s.scalars(select(Face.id).where(Face.media_id == obama)))
        s.execute(delete(FaceCrop).where(FaceCrop.face_id.in_(ids)))
        s.execute(delete(Face).where(Face.id.in_(ids)))
        s.execute(delete(Media).where(Media.id == obama))
    assert set(ids) <= set(gallery_fw.index.ids().tolist())  # the index still holds them
    assert not set(ids) & {fid for fid, _ in search_ids(gallery_fw, admin)}


def test_restricted_and_expired_media_excluded(gallery_fw, admin):
    from datetime import timedelta

    from facewarden.core.clock import utcnow

    obama = media_id_of(gallery_fw, "obama")
    with gallery_fw.sessions.begin() as s:
        s.get(Media, obama).expires_at = utcnow() - timedelta(seconds=1)
    res = gallery_fw.search.search(admin, (PROBES / "obama1.jpg").read_bytes(), case="CASE-1")
    assert all(identity_of(c.media_path) != "obama" for f in res.faces for c in f.candidates)


def test_delete_source_removes_everything(gallery_fw, admin):
    counts = gallery_fw.gallery.delete_source(admin, "press")
    assert counts["media"] == 5 and counts["faces"] == 5
    assert gallery_fw.stats()["faces"] == 0 and len(gallery_fw.index) == 0
    assert search_ids(gallery_fw, admin) == []
    with pytest.raises(NotFound):
        gallery_fw.gallery.delete_source(admin, "press")


def test_delete_unknown_media_is_a_clear_error(gallery_fw, admin):
    with pytest.raises(NotFound, match="999"):
        gallery_fw.gallery.delete_media(admin, [999])
    assert gallery_fw.stats()["faces"] == 5


def test_index_rebuild_gives_the_same_results(gallery_fw, admin):
    before = {p: search_ids(gallery_fw, admin, p) for p in PROBE_LABELS}
    gallery_fw.gallery.rebuild_index(admin)
    assert len(gallery_fw.index) == 5
    assert {p: search_ids(gallery_fw, admin, p) for p in PROBE_LABELS} == before


def test_lost_or_corrupt_index_file_is_rebuilt_from_database(gallery_fw, admin, pipeline):
    before = search_ids(gallery_fw, admin)
    gallery_fw.close()
    path = gallery_fw.settings.index_dir / "faiss" / "state.sealed"
    path.write_bytes(b"garbage")
    reopened = Facewarden(gallery_fw.settings, pipeline)
    assert len(reopened.index) == 5
    assert search_ids(reopened, admin) == before
    path.unlink()
    again = Facewarden(gallery_fw.settings, pipeline)
    assert search_ids(again, admin) == before


def test_index_vectors_equal_decrypted_templates(gallery_fw):
    ids = sorted(gallery_fw.index.ids().tolist())
    _, vecs = gallery_fw.load_templates(ids)
    d, found = gallery_fw.index.search(vecs, 1)
    assert found[:, 0].tolist() == ids or set(found[:, 0].tolist()) == set(ids)
    assert np.allclose(d[:, 0], 0, atol=1e-3)


def test_reference_photo_of_deleted_person_finds_nothing(gallery_fw, admin):
    gallery_fw.gallery.delete_media(admin, [media_id_of(gallery_fw, "obama")])
    res = gallery_fw.search.search(admin, (REFERENCE / "obama2.jpg").read_bytes(), case="CASE-1")
    assert res.faces[0].no_candidate
