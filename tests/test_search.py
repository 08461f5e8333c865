"""1:N search over a real gallery: identities at rank 1, unknowns explicit, rules enforced."""

import pytest

from facewarden.core.actors import Actor
from facewarden.core.errors import NoFaceFound, PermissionDenied, Refused

from conftest import PROBE_LABELS, PROBES, REFERENCE, UNKNOWN, identity_of, last_event, open_case


@pytest.mark.parametrize("probe", sorted(PROBE_LABELS))
def test_each_labelled_probe_finds_its_identity_at_rank_1(gallery_fw, admin, probe):
    result = gallery_fw.search.search(
        admin, (PROBES / probe).read_bytes(), case="CASE-1", probe_name=probe
    )
    rank1 = {identity_of(f.candidates[0].media_path) for f in result.faces if f.candidates}
    assert PROBE_LABELS[probe] <= rank1, (probe, rank1)
    for face in result.faces:
        ds = [c.distance for c in face.candidates]
        assert ds == sorted(ds) and all(d <= 0.6 for d in ds)
        assert [c.rank for c in face.candidates] == list(range(1, len(ds) + 1))


@pytest.mark.parametrize("probe", ["Aaron_Sorkin_0001.jpg", "Angela_Merkel_0001.jpg"])
def test_unknown_face_gets_no_candidate_within_threshold(gallery_fw, admin, probe):
    result = gallery_fw.search.search(admin, (UNKNOWN / probe).read_bytes(), case="CASE-1")
    assert len(result.faces) == 1
    assert result.faces[0].no_candidate
    assert result.faces[0].as_dict()["no_candidate_within_threshold"] is True


def test_candidate_carries_provenance(gallery_fw, admin):
    result = gallery_fw.search.search(admin, (REFERENCE / "obama2.jpg").read_bytes(), case="CASE-1")
    top = result.faces[0].candidates[0]
    assert identity_of(top.media_path) == "obama"
    assert top.source == "press" and top.jurisdiction == "DE"
    assert len(top.box) == 4 and 0 < top.score <= 1 and top.score > 0.5
    assert result.gallery_size == 5 and result.model.startswith("dlib_face_recognition")


def test_threshold_and_top_k_are_honoured(gallery_fw, admin):
    probe = (REFERENCE / "obama2.jpg").read_bytes()
    strict = gallery_fw.search.search(admin, probe, case="CASE-1", threshold=0.2)
    assert strict.faces[0].no_candidate
    loose = gallery_fw.search.search(admin, probe, case="CASE-1", threshold=1.5, top_k=3)
    assert len(loose.faces[0].candidates) == 3


def test_every_search_is_logged_with_its_results(gallery_fw, admin):
    result = gallery_fw.search.search(admin, (PROBES / "obama1.jpg").read_bytes(), case="CASE-1")
    ev = last_event(gallery_fw)
    assert ev.action == "search" and ev.outcome == "ok" and ev.seq == result.audit_seq
    assert ev.case_ref == "CASE-1" and ev.legal_basis == "StPO s.98c"
    assert ev.probe_hash == result.probe_sha256 and ev.gallery_size == 5 and ev.threshold == 0.6
    assert str(result.faces[0].candidates[0].face_id) in ev.details
    assert gallery_fw.audit.verify().ok


@pytest.mark.parametrize("case", [None, "NO-SUCH-CASE"])
def test_search_without_a_valid_case_is_refused_and_logged(gallery_fw, admin, case):
    with pytest.raises(Refused, match="case"):
        gallery_fw.search.search(admin, (PROBES / "obama1.jpg").read_bytes(), case=case)
    ev = last_event(gallery_fw)
    assert ev.action == "search" and ev.outcome == "refused" and "case" in ev.error


def test_search_in_closed_or_expired_case_is_refused(gallery_fw, admin):
    gallery_fw.cases.close(admin, "CASE-1")
    with pytest.raises(Refused, match="closed"):
        gallery_fw.search.search(admin, (PROBES / "obama1.jpg").read_bytes(), case="CASE-1")
    open_case(gallery_fw, admin, "SHORT", expires="1h")
    from datetime import timedelta

    from facewarden.adapters.storage.tables import Case
    from facewarden.core.clock import utcnow

    with gallery_fw.sessions.begin() as s:
        s.query(Case).filter_by(ref="SHORT").update({"expires_at": utcnow() - timedelta(minutes=1)})
    with pytest.raises(Refused, match="expired"):
        gallery_fw.search.search(admin, (PROBES / "obama1.jpg").read_bytes(), case="SHORT")


def test_search_needs_investigator_role(gallery_fw):
    operator = Actor("ops", frozenset({"operator"}))
    with pytest.raises(PermissionDenied, match="investigator"):
        gallery_fw.search.search(operator, (PROBES / "obama1.jpg").read_bytes(), case="CASE-1")
    ev = last_event(gallery_fw)
    assert ev.outcome == "refused" and ev.actor == "ops"


def test_verify_same_and_different(gallery_fw, admin):
    a = (REFERENCE / "obama.jpg").read_bytes()
    same = gallery_fw.search.verify(
        admin, a, (REFERENCE / "obama3.jpg").read_bytes(), case="CASE-1"
    )
    diff = gallery_fw.search.verify(admin, a, (REFERENCE / "biden.jpg").read_bytes(), case="CASE-1")
    assert same.same and same.distance <= 0.6
    assert not diff.same and diff.distance > 0.6
    assert last_event(gallery_fw).action == "verify"


def test_verify_without_face_is_a_clear_error(gallery_fw, admin, tmp_path):
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), "white").save(blank)
    with pytest.raises(NoFaceFound, match="image B"):
        gallery_fw.search.verify(
            admin, (REFERENCE / "obama.jpg").read_bytes(), blank.read_bytes(), case="CASE-1"
        )
