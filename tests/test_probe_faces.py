"""Probe faces kept with the case (encrypted, bound to their search), readable only by the
case's people while it is open and by oversight, every view logged, wiped with the case;
the review sheet and the candidate's source photo, tried the way an insider would."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from PIL import Image
from sqlalchemy import func, select, update

from facewarden.adapters.crypto import DecryptionFailed
from facewarden.adapters.storage.tables import Case, ProbeFace
from facewarden.core.clock import utcnow
from facewarden.core.errors import NotFound, PermissionDenied, Refused

from conftest import add_user, identity_of, last_event, open_case, probe


@pytest.fixture
def case(gallery_fw, admin):
    """CASE-R: ines (investigator) and rita (reviewer); bert investigates another case;
    dora is the DPO, aldo an auditor. One search of obama_and_biden.jpg by ines."""
    fw = gallery_fw
    users = {
        name: add_user(fw, admin, name, role)
        for name, role in [
            ("ines", "investigator"),
            ("rita", "reviewer"),
            ("bert", "investigator"),
            ("dora", "dpo"),
            ("aldo", "auditor"),
        ]
    }
    open_case(fw, admin, "CASE-R", investigators=["ines", "rita"])
    open_case(fw, admin, "CASE-X", investigators=["bert"])
    result = fw.search.search(users["ines"], probe("obama_and_biden.jpg"), case="CASE-R")
    return fw, users, result


def details(event) -> dict:
    return json.loads(event.details) if isinstance(event.details, str) else event.details


def kept(fw) -> int:
    with fw.sessions() as s:
        return s.scalar(select(func.count()).select_from(ProbeFace))


def test_each_searched_probe_face_is_kept_encrypted(case):
    fw, users, result = case
    searched = [n for n, f in enumerate(result.faces) if f.searched]
    with fw.sessions() as s:
        rows = s.scalars(select(ProbeFace).where(ProbeFace.search_id == result.search_id)).all()
    assert sorted(r.face_index for r in rows) == searched  # the gated face is not kept
    for r in rows:
        assert not r.data.startswith(b"\xff\xd8") and b"JFIF" not in r.data
        assert r.quality == result.faces[r.face_index].quality
    jpeg = fw.review.probe_face(users["rita"], result.search_id, searched[0])
    picture = Image.open(io.BytesIO(jpeg))
    assert picture.format == "JPEG" and max(picture.size) <= 200
    ev = last_event(fw)
    assert (ev.action, ev.actor, ev.case_ref) == ("probe.view", "rita", "CASE-R")
    assert details(ev) == {"search_id": result.search_id, "probe_face": 0, "access": "member"}


def test_a_probe_face_moved_to_another_search_does_not_decrypt(case):
    """An insider with database access copies one search's probe face into another."""
    fw, users, result = case
    other = fw.search.search(users["ines"], probe("obama1.jpg"), case="CASE-R")
    with fw.sessions() as s:
        blob = s.scalar(
            select(ProbeFace.data).where(
                ProbeFace.search_id == result.search_id, ProbeFace.face_index == 0
            )
        )
    with fw.engine.begin() as conn:
        conn.execute(
            update(ProbeFace)
            .where(ProbeFace.search_id == other.search_id, ProbeFace.face_index == 0)
            .values(data=blob)
        )
    with pytest.raises(DecryptionFailed):  # AES-GCM's tag fails: altered or moved
        fw.review.probe_face(users["ines"], other.search_id, 0)


@pytest.mark.parametrize(("who", "allowed"), [("bert", False), ("aldo", True), ("dora", True)])
def test_probe_faces_are_case_scoped(case, who, allowed):
    fw, users, result = case
    if allowed:
        assert fw.review.probe_face(users[who], result.search_id, 0)[:2] == b"\xff\xd8"
        assert last_event(fw).outcome == "ok"
    else:
        with pytest.raises(Refused):
            fw.review.probe_face(users[who], result.search_id, 0)
        ev = last_event(fw)
        assert (ev.actor, ev.outcome, ev.case_ref) == (who, "refused", "CASE-R")


def test_probe_faces_are_wiped_when_the_case_closes(case):
    fw, users, result = case
    assert kept(fw) >= 2
    fw.cases.close(users["ines"], "CASE-R")
    assert kept(fw) == 0
    assert details(last_event(fw, "case.close"))["probe_faces_wiped"] >= 2
    with pytest.raises(Refused):  # the case's people no longer read its records
        fw.review.probe_face(users["rita"], result.search_id, 0)
    with pytest.raises(NotFound, match="wiped"):
        fw.review.probe_face(users["dora"], result.search_id, 0)


def test_probe_faces_are_wiped_when_the_case_expires(case, admin):
    fw, users, _ = case
    other = fw.search.search(users["bert"], probe("obama1.jpg"), case="CASE-X")
    with fw.engine.begin() as conn:
        conn.execute(
            update(Case).where(Case.ref == "CASE-R").values(expires_at=utcnow() - timedelta(1))
        )
    fw.gallery.retention_run(admin)
    with fw.sessions() as s:
        left = s.scalars(select(ProbeFace.search_id)).all()
    assert set(left) == {other.search_id}  # the open case keeps its probe face


def test_review_sheet_shows_probe_beside_candidate_and_erased_faces(case, admin):
    fw, users, result = case
    sheet = fw.review.sheet(users["rita"], "CASE-R", per_page=2)
    assert sheet["total"] == sum(len(f.candidates) for f in result.faces)
    assert sheet["pages"] == -(-sheet["total"] // 2) and len(sheet["items"]) == 2
    first = sheet["items"][0]
    assert first["probe_kept"] and first["probe_quality"]["width"] > 0
    assert first["candidate_quality"]["width"] > 0 and first["source"] == "press"
    assert first["distance"] <= result.threshold and first["status"] == "pending"
    assert last_event(fw).action == "case.review"
    # A decision shows; an erased candidate shows as erased, without provenance.
    fw.confirmations.decide(users["ines"], first["search_id"], first["face_id"], "confirm")
    fw.gallery.delete_media(admin, [first["media_id"]])
    again = fw.review.sheet(users["rita"], "CASE-R", per_page=2)["items"][0]
    assert again["erased"] and "media_path" not in again
    assert [d["user"] for d in again["decisions"]] == ["ines"]
    with pytest.raises(PermissionDenied):
        fw.review.sheet(add_user(fw, admin, "op", "operator"), "CASE-R")
    with pytest.raises(Refused):
        fw.review.sheet(users["bert"], "CASE-R")


def test_source_photo_with_box_on_demand_logged(case, admin):
    fw, users, result = case
    top = next(f for f in result.faces if f.candidates).candidates[0]
    jpeg = fw.review.source_photo(users["rita"], result.search_id, top.face_id)
    assert Image.open(io.BytesIO(jpeg)).format == "JPEG"
    ev = last_event(fw)
    assert (ev.action, ev.actor, ev.case_ref) == ("source.view", "rita", "CASE-R")
    assert identity_of(top.media_path) in {"obama", "biden", "kit_harington", "rose_leslie"}
    with pytest.raises(NotFound, match="not a candidate"):
        fw.review.source_photo(users["rita"], result.search_id, top.face_id + 1000)
    with pytest.raises(Refused):
        fw.review.source_photo(users["bert"], result.search_id, top.face_id)
    fw.gallery.restrict(admin, top.media_id)
    with pytest.raises(Refused, match="restricted"):
        fw.review.source_photo(users["rita"], result.search_id, top.face_id)
    assert fw.review.source_photo(users["dora"], result.search_id, top.face_id)[:2] == b"\xff\xd8"
