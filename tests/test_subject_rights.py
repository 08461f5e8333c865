"""Subject access and erasure on real faces: reports, receipts, suppression of re-ingest."""

import hashlib

import numpy as np
import pytest
from sqlalchemy import func, select

from facewarden.adapters.storage.tables import Face, FaceCrop, Media, SubjectRequest
from facewarden.core.errors import InvalidInput, NoFaceFound, PermissionDenied
from facewarden.services.audit import canonical

from conftest import (
    GALLERY,
    REFERENCE,
    UNKNOWN,
    add_source,
    add_user,
    identity_of,
    last_event,
    probe,
)

SELFIE = (REFERENCE / "obama.jpg").read_bytes()


def count(fw, model):
    with fw.sessions() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_access_report_lists_media_provenance_and_searches(gallery_fw, admin):
    search = gallery_fw.search.search(admin, probe("obama1.jpg"), case="CASE-1")
    report = gallery_fw.subjects.access(admin, SELFIE, reference="REQ-1")
    assert [identity_of(m["media_path"]) for m in report["matches"]] == ["obama"]
    m = report["matches"][0]
    assert m["distance"] <= report["threshold"] == gallery_fw.settings.subject_threshold
    assert m["source"] == "press" and m["jurisdiction"] == "DE"
    assert m["lawful_basis"].startswith("Art. 6") and m["retained_until"] > m["ingested_at"]
    assert [(s["case"], s["search_id"]) for s in m["searches"]] == [("CASE-1", search.search_id)]
    assert report["selfie_sha256"] == hashlib.sha256(SELFIE).hexdigest()
    ev = last_event(gallery_fw)
    assert ev.action == "subject.access" and ev.seq == report["audit_seq"]
    assert ev.probe_hash == report["selfie_sha256"]
    html = gallery_fw.subjects.report_html(report)
    assert "obama.jpg" in html and "CASE-1" in html and "REQ-1" in html
    # The selfie is used once: nothing of it is kept but its hash.
    with gallery_fw.sessions() as s:
        request = s.get(SubjectRequest, report["request_id"])
    assert request.suppression_template is None and request.completed_at is not None
    assert count(gallery_fw, Media) == 5


def test_access_report_escapes_html(gallery_fw, admin):
    report = gallery_fw.subjects.access(admin, SELFIE, reference="<script>alert(1)</script>")
    html = gallery_fw.subjects.report_html(report)
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_access_finds_restricted_media_too(gallery_fw, admin):
    first = gallery_fw.subjects.access(admin, SELFIE)["matches"][0]
    gallery_fw.gallery.restrict(admin, first["media_id"])
    again = gallery_fw.subjects.access(admin, SELFIE)["matches"]
    assert [m["media_id"] for m in again] == [first["media_id"]] and again[0]["restricted"]


def test_unknown_person_has_nothing_held(gallery_fw, admin):
    unknown = sorted(UNKNOWN.iterdir())[0].read_bytes()
    assert gallery_fw.subjects.access(admin, unknown)["matches"] == []


def test_subject_rights_are_for_the_dpo(gallery_fw, admin):
    inv = add_user(gallery_fw, admin, "ines", "investigator")
    for call in (gallery_fw.subjects.access, gallery_fw.subjects.erase):
        with pytest.raises(PermissionDenied, match="dpo"):
            call(inv, SELFIE)
        assert last_event(gallery_fw).outcome == "refused"
    assert count(gallery_fw, Face) == 5


def test_selfie_must_show_exactly_one_face(gallery_fw, admin):
    with pytest.raises(InvalidInput, match="shows 3 faces"):
        gallery_fw.subjects.access(admin, probe("obama_and_biden.jpg"))
    ev = last_event(gallery_fw)
    assert ev.outcome == "error" and "faces" in ev.error
    with pytest.raises(NoFaceFound):
        gallery_fw.subjects.access(admin, _no_face_jpeg())


def _no_face_jpeg() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (200, 200), (120, 130, 140)).save(buf, "JPEG")
    return buf.getvalue()


def test_erasure_deletes_suppresses_and_gives_a_receipt(gallery_fw, admin, copy_tree):
    preview = gallery_fw.subjects.erase_preview(admin, SELFIE)
    assert [identity_of(m["media_path"]) for m in preview] == ["obama"]
    assert last_event(gallery_fw).action == "subject.erase.preview"
    assert count(gallery_fw, Face) == 5  # a preview changes nothing

    receipt = gallery_fw.subjects.erase(admin, SELFIE, reference="REQ-2")
    assert receipt["face_ids"] == [preview[0]["face_id"]]
    assert (receipt["faces"], receipt["crops"], receipt["media_records_deleted"]) == (1, 1, 1)
    assert receipt["by"] == "admin" and receipt["suppressed"]
    body = {k: v for k, v in receipt.items() if k != "receipt_sha256"}
    assert receipt["receipt_sha256"] == hashlib.sha256(canonical(body).encode()).hexdigest()
    ev = last_event(gallery_fw)
    assert ev.action == "subject.erase" and ev.seq == receipt["audit_seq"]

    # Gone from the database, the crops and the index; a new search finds nothing of it.
    assert count(gallery_fw, Face) == 4 and count(gallery_fw, FaceCrop) == 4
    assert preview[0]["face_id"] not in set(gallery_fw.index.ids().tolist())
    result = gallery_fw.search.search(admin, SELFIE, case="CASE-1")
    assert all(identity_of(c.media_path) != "obama" for c in result.faces[0].candidates)
    assert gallery_fw.subjects.access(admin, SELFIE)["matches"] == []

    # The suppression entry is an encrypted template, not the plain descriptor.
    with gallery_fw.sessions() as s:
        stored = s.get(SubjectRequest, receipt["request_id"]).suppression_template
    assert stored is not None
    plain = gallery_fw.suppression.templates()[0]
    assert plain.shape == (128,) and plain.astype("<f4").tobytes() not in stored

    # Ingesting the same photos again (e.g. from a new source) skips the erased person.
    add_source(gallery_fw, admin, "press-2")
    summary = gallery_fw.ingest.run(admin, [copy_tree(GALLERY, "again")], "press-2")
    assert summary.faces_suppressed == 1 and summary.images == 0 and summary.duplicates == 4
    assert gallery_fw.subjects.access(admin, SELFIE)["matches"] == []
    requests = gallery_fw.subjects.requests(admin)
    assert [r["kind"] for r in requests] == ["erasure", "access", "access"]
    erasure = requests[0]
    assert erasure["seconds_to_complete"] >= 0 and erasure["suppression"]
    assert erasure["reference"] == "REQ-2" and erasure["faces"] == 1


def test_erasure_of_reviewed_candidates_only(gallery_fw, admin):
    preview = gallery_fw.subjects.erase_preview(admin, SELFIE, threshold=0.9)
    assert len(preview) >= 2  # a loose threshold brings in other people
    obama = [m["face_id"] for m in preview if identity_of(m["media_path"]) == "obama"]
    receipt = gallery_fw.subjects.erase(admin, SELFIE, threshold=0.9, face_ids=obama)
    assert receipt["face_ids"] == obama and count(gallery_fw, Face) == 4
    with pytest.raises(InvalidInput, match="not candidates"):
        gallery_fw.subjects.erase(admin, SELFIE, face_ids=[123456])


def test_erasure_keeps_other_people_in_the_same_photo(fw, admin):
    from conftest import PROBES, add_source

    add_source(fw, admin)
    fw.ingest.run(admin, [PROBES / "obama_and_biden.jpg"], "press")
    assert count(fw, Face) == 3
    receipt = fw.subjects.erase(admin, SELFIE)
    assert receipt["faces"] == 1 and receipt["media_records_deleted"] == 0
    assert count(fw, Face) == 2 and count(fw, Media) == 1
    ids, vecs = fw.load_templates(list(fw.index.ids().tolist()))
    assert len(ids) == 2 and np.all(np.linalg.norm(vecs - fw.suppression.templates(), axis=1) > 0.5)


def test_an_erasure_during_an_ingest_run_applies_to_the_rest_of_the_run(
    gallery_fw, admin, monkeypatch
):
    from conftest import PROBES

    # One image per stored batch, so that the erasure falls between the first image and the
    # rest (with larger batches it falls after the first batch: the same rule, later).
    monkeypatch.setattr("facewarden.services.ingest.STORE_BATCH_IMAGES", 1)
    erased = []

    def erase_after_first(done, total, path):
        if done == 1:  # probes are stored in name order: alex_lacamoire1.jpg first
            erased.append(gallery_fw.subjects.erase(admin, SELFIE))

    summary = gallery_fw.ingest.run(admin, [PROBES], "press", workers=1, progress=erase_after_first)
    assert erased and erased[0]["faces"] == 1
    # obama1.jpg (Obama alone) leaves no record; obama_and_biden.jpg keeps only Biden.
    assert summary.faces_suppressed == 2 and summary.images == 4
    assert gallery_fw.subjects.erase_preview(admin, SELFIE) == []


def test_an_erasure_waits_for_an_ingest_write_in_flight(gallery_fw, admin):
    import threading

    from facewarden.adapters.storage.db import erasure_lock, transaction

    done = threading.Event()
    worker = threading.Thread(
        target=lambda: (gallery_fw.subjects.erase(admin, SELFIE), done.set()), daemon=True
    )
    with transaction(gallery_fw.writes) as session:
        erasure_lock(session, shared=True)  # what every ingest write holds
        worker.start()
        assert not done.wait(1.5)
    worker.join(30)
    assert done.is_set()


def _faces_of(fw, stem):
    with fw.sessions() as s:
        media = next(m for m in s.scalars(select(Media)) if identity_of(m.path) == stem)
        return set(s.scalars(select(Face.id).where(Face.media_id == media.id)))


def test_faces_another_process_committed_are_searched_and_erased(gallery_fw, admin):
    """A second process on the same data (the CLI ingesting while the server runs) commits
    faces this process's index has never seen: searches pick them up within
    ``index_catch_up_seconds``, and an erasure finds them at once (the index is reconciled
    with the database and searched exactly before the candidates are chosen)."""
    import time

    from facewarden.services.app import Facewarden

    settings = gallery_fw.settings
    server = Facewarden(settings.model_copy(update={"index_catch_up_seconds": 0.5}))
    cli = Facewarden(settings)
    try:
        server.search.search(admin, probe("obama1.jpg"), case="CASE-1")  # index in use
        cli.ingest.run(admin, [REFERENCE / "obama2.jpg"], "press")
        obama2 = _faces_of(cli, "obama2")
        time.sleep(0.6)
        found = server.search.search(admin, probe("obama1.jpg"), case="CASE-1")
        assert obama2 <= {c.face_id for f in found.faces for c in f.candidates}
        # No catching up by searches now: the erasure alone must find the new face.
        server.settings = settings.model_copy(update={"index_catch_up_seconds": 3600})
        cli.ingest.run(admin, [REFERENCE / "obama3.jpg"], "press")
        obama3 = _faces_of(cli, "obama3")
        obama = _faces_of(server, "obama")
        receipt = server.subjects.erase(admin, SELFIE, reference="REQ-X")
        assert obama | obama2 | obama3 <= set(receipt["face_ids"])
        after = server.search.search(admin, probe("obama1.jpg"), case="CASE-1", threshold=1.5)
        assert not set(receipt["face_ids"]) & {c.face_id for f in after.faces for c in f.candidates}
    finally:
        cli.close()
        server.close()


def test_a_face_committed_below_the_caught_up_id_is_still_indexed(gallery_fw, admin):
    """On PostgreSQL a sequence hands out ids before commit, so a lower id can commit after
    a higher one the server has already caught up to. Simulated: the lower id's row is held
    back (deleted) while the server catches up, then committed (put back)."""
    from sqlalchemy import delete, insert

    from facewarden.services.app import Facewarden

    settings = gallery_fw.settings
    server = Facewarden(settings.model_copy(update={"index_catch_up_seconds": 0}))
    cli = Facewarden(settings)
    faces = Face.__table__
    try:
        server.search.search(admin, probe("obama1.jpg"), case="CASE-1")  # index in use
        cli.ingest.run(admin, [REFERENCE / "obama2.jpg", REFERENCE / "obama3.jpg"], "press")
        new = _faces_of(cli, "obama2") | _faces_of(cli, "obama3")
        late = min(new)
        with cli.engine.begin() as con:
            row = dict(con.execute(select(faces).where(faces.c.id == late)).mappings().one())
            con.execute(delete(faces).where(faces.c.id == late))
        assert server.catch_up_index() == len(new) - 1
        assert late not in server.index.ids()
        with cli.engine.begin() as con:
            con.execute(insert(faces).values(**row))
        assert server.catch_up_index() == 1
        assert late in server.index.ids() and server.catch_up_index() == 0
        found = server.search.search(admin, probe("obama1.jpg"), case="CASE-1")
        assert late in {c.face_id for f in found.faces for c in f.candidates}
    finally:
        cli.close()
        server.close()
