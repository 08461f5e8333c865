"""Cases: assignment, quotas, probe retention; the two-person rule for identifications."""

from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import select, update

from facewarden.adapters.imaging import decode_image
from facewarden.adapters.storage.tables import Case, CaseSearch, SearchHit
from facewarden.core.binding import probe_aad
from facewarden.core.clock import utcnow
from facewarden.core.errors import InvalidInput, NotFound, PermissionDenied, Refused

from conftest import add_user, identity_of, last_event, open_case, probe


@pytest.fixture
def team(gallery_fw, admin):
    """An investigator assigned to CASE-2, one who is not, and a reviewer assigned to it."""
    inv = add_user(gallery_fw, admin, "ines", "investigator")
    other = add_user(gallery_fw, admin, "olaf", "investigator")
    rev = add_user(gallery_fw, admin, "rita", "reviewer")
    open_case(gallery_fw, admin, "CASE-2", investigators=["ines", "rita"])
    return inv, other, rev


def obama_hit(fw, actor, case="CASE-2"):
    result = fw.search.search(actor, probe("obama1.jpg"), case=case)
    top = result.faces[0].candidates[0]
    assert identity_of(top.media_path) == "obama"
    return result.search_id, top.face_id


# -- assignment ------------------------------------------------------------------------------
def test_only_assigned_investigators_may_search(gallery_fw, team):
    inv, other, _ = team
    assert gallery_fw.cases.show(inv, "CASE-2").investigators == ["admin", "ines"]
    gallery_fw.search.search(inv, probe("obama1.jpg"), case="CASE-2")
    with pytest.raises(Refused, match="olaf is not assigned to case 'CASE-2'") as exc:
        gallery_fw.search.search(other, probe("obama1.jpg"), case="CASE-2")
    assert exc.value.code == "not_assigned"
    ev = last_event(gallery_fw)
    assert (ev.action, ev.outcome, ev.actor, ev.case_ref) == ("search", "refused", "olaf", "CASE-2")
    assert ev.legal_basis == "StPO s.98c"


def test_assignment_by_opener_or_admin_only(gallery_fw, admin, team):
    inv, other, _ = team
    with pytest.raises(PermissionDenied, match="admin"):
        gallery_fw.cases.assign(inv, "CASE-2", "olaf")
    assert last_event(gallery_fw).outcome == "refused"
    info = gallery_fw.cases.assign(admin, "CASE-2", "olaf")
    assert info.investigators == ["admin", "ines", "olaf"]
    assert last_event(gallery_fw).action == "case.assign"
    gallery_fw.search.search(other, probe("obama1.jpg"), case="CASE-2")
    gallery_fw.cases.assign(admin, "CASE-2", "olaf", remove=True)
    with pytest.raises(Refused, match="not assigned"):
        gallery_fw.search.search(other, probe("obama1.jpg"), case="CASE-2")


def test_only_active_investigators_and_reviewers_can_be_assigned(gallery_fw, admin, team):
    add_user(gallery_fw, admin, "otto", "operator")
    with pytest.raises(InvalidInput, match="neither an investigator nor a reviewer"):
        open_case(gallery_fw, admin, "CASE-3", investigators=["otto"])
    info = open_case(gallery_fw, admin, "CASE-3", investigators=["rita"])
    assert (info.investigators, info.reviewers) == (["admin"], ["rita"])
    with pytest.raises(InvalidInput, match="no active user"):
        gallery_fw.cases.assign(admin, "CASE-2", "nobody")
    with pytest.raises(InvalidInput, match="already assigned"):
        gallery_fw.cases.assign(admin, "CASE-2", "ines")


def test_search_quota_is_enforced_and_logged(gallery_fw, admin):
    open_case(gallery_fw, admin, "ONE", quota=1)
    gallery_fw.search.search(admin, probe("obama1.jpg"), case="ONE")
    with pytest.raises(Refused, match="quota of 1 searches") as exc:
        gallery_fw.search.search(admin, probe("obama1.jpg"), case="ONE")
    assert exc.value.code == "quota_exhausted"
    ev = last_event(gallery_fw)
    assert ev.outcome == "refused" and ev.case_ref == "ONE" and ev.probe_hash
    assert gallery_fw.cases.show(admin, "ONE").searches == 1


# -- search records and probe retention --------------------------------------------------------
def test_each_search_is_recorded_with_its_hits(gallery_fw, admin):
    result = gallery_fw.search.search(admin, probe("obama_and_biden.jpg"), case="CASE-1")
    with gallery_fw.sessions() as s:
        record = s.get(CaseSearch, result.search_id)
        hits = s.scalars(select(SearchHit).where(SearchHit.search_id == record.id)).all()
    assert record.probe_sha256 == result.probe_sha256 and record.audit_seq == result.audit_seq
    assert record.faces == len(result.faces) >= 2
    assert record.probe_templates is None  # the case did not ask for them
    returned = {(c.face_id, c.rank) for f in result.faces for c in f.candidates}
    assert {(h.face_id, h.rank) for h in hits} == returned and len(returned) >= 2


def test_probe_templates_live_only_as_long_as_the_case(gallery_fw, admin, pipeline):
    open_case(gallery_fw, admin, "KEEP", keep_probe_templates=True)
    result = gallery_fw.search.search(admin, probe("obama1.jpg"), case="KEEP")
    with gallery_fw.sessions() as s:
        stored = s.get(CaseSearch, result.search_id).probe_templates
    plain = gallery_fw.cipher.decrypt(
        stored, probe_aad("KEEP", result.probe_sha256), gallery_fw.cipher.key_id
    )
    vec = np.frombuffer(plain, dtype="<f4")
    image = decode_image(probe("obama1.jpg"), max_pixels=10**8)
    expected = pipeline.process(image, enrol=False).faces[0].descriptor
    assert np.allclose(vec, expected, atol=1e-6)
    assert vec.tobytes() not in stored  # encrypted at rest
    gallery_fw.cases.close(admin, "KEEP")
    with gallery_fw.sessions() as s:
        record = s.get(CaseSearch, result.search_id)
    assert record.probe_templates is None and record.templates_wiped_at is not None
    assert record.probe_sha256 == result.probe_sha256  # the hash stays as the record


def test_retention_run_wipes_probe_templates_of_expired_cases(gallery_fw, admin):
    open_case(gallery_fw, admin, "KEEP", keep_probe_templates=True)
    result = gallery_fw.search.search(admin, probe("obama1.jpg"), case="KEEP")
    with gallery_fw.writes.begin() as s:
        s.execute(update(Case).where(Case.ref == "KEEP").values(expires_at=utcnow() - timedelta(1)))
    receipt = gallery_fw.gallery.retention_run(admin)
    assert receipt["scope"]["probe_templates_wiped"] == 1
    with gallery_fw.sessions() as s:
        assert s.get(CaseSearch, result.search_id).probe_templates is None


def test_only_assigned_investigators_or_admin_close_a_case(gallery_fw, admin, team):
    _, other, _ = team
    with pytest.raises(Refused, match="not assigned"):
        gallery_fw.cases.close(other, "CASE-2")
    assert last_event(gallery_fw).action == "case.close"
    assert gallery_fw.cases.close(admin, "CASE-2").status == "closed"


# -- two-person confirmation -----------------------------------------------------------------
def test_two_different_people_make_an_identification(gallery_fw, team):
    inv, _, rev = team
    search_id, face_id = obama_hit(gallery_fw, inv)
    first = gallery_fw.confirmations.decide(inv, search_id, face_id, "confirm", "same scar")
    assert first.status == "pending" and first.decisions[0]["note"] == "same scar"
    assert last_event(gallery_fw).action == "candidate.confirm"
    with pytest.raises(Refused, match="different person") as exc:
        gallery_fw.confirmations.decide(inv, search_id, face_id)
    assert exc.value.code == "same_person"
    ev = last_event(gallery_fw)
    assert ev.outcome == "refused" and ev.actor == "ines" and ev.case_ref == "CASE-2"
    second = gallery_fw.confirmations.decide(rev, search_id, face_id)
    assert second.status == "identified"
    assert [d["user"] for d in second.decisions] == ["ines", "rita"]
    with pytest.raises(Refused, match="already identified"):
        gallery_fw.confirmations.decide(gallery_fw.actor(name="admin"), search_id, face_id)


def test_one_person_cannot_identify_alone(gallery_fw, admin):
    """The single-operator user holds many roles but is still one person."""
    search_id, face_id = obama_hit(gallery_fw, admin, case="CASE-1")
    assert gallery_fw.confirmations.decide(admin, search_id, face_id).status == "pending"
    with pytest.raises(Refused, match="different person"):
        gallery_fw.confirmations.decide(admin, search_id, face_id)
    assert gallery_fw.confirmations.state(search_id, face_id).status == "pending"


def test_two_investigators_without_a_reviewer_do_not_identify(gallery_fw, admin, team):
    inv, other, _ = team
    gallery_fw.cases.assign(admin, "CASE-2", "olaf")
    search_id, face_id = obama_hit(gallery_fw, inv)
    gallery_fw.confirmations.decide(inv, search_id, face_id)
    assert gallery_fw.confirmations.decide(other, search_id, face_id).status == "pending"


def test_rejection_is_final(gallery_fw, team):
    inv, _, rev = team
    search_id, face_id = obama_hit(gallery_fw, inv)
    assert gallery_fw.confirmations.decide(rev, search_id, face_id, "reject").status == "rejected"
    with pytest.raises(Refused, match="already rejected"):
        gallery_fw.confirmations.decide(inv, search_id, face_id)


def test_who_may_decide(gallery_fw, admin, team):
    inv, other, _ = team
    search_id, face_id = obama_hit(gallery_fw, inv)
    with pytest.raises(Refused, match="olaf is not assigned"):
        gallery_fw.confirmations.decide(other, search_id, face_id)
    operator = add_user(gallery_fw, admin, "otto", "operator")
    with pytest.raises(PermissionDenied, match="investigator or reviewer"):
        gallery_fw.confirmations.decide(operator, search_id, face_id)
    assert last_event(gallery_fw).outcome == "refused"
    with pytest.raises(InvalidInput, match="not a candidate"):
        gallery_fw.confirmations.decide(inv, search_id, face_id + 1000)
    with pytest.raises(NotFound, match="no search"):
        gallery_fw.confirmations.decide(inv, 9999, face_id)


def test_exports_require_the_identification(gallery_fw, team):
    inv, _, rev = team
    search_id, face_id = obama_hit(gallery_fw, inv)
    assert gallery_fw.confirmations.export(inv, "CASE-2") == []
    with pytest.raises(Refused, match="not an identification") as exc:
        gallery_fw.confirmations.export(inv, "CASE-2", search_id=search_id, face_id=face_id)
    assert exc.value.code == "not_identified"
    assert last_event(gallery_fw).outcome == "refused"
    gallery_fw.confirmations.decide(inv, search_id, face_id)
    gallery_fw.confirmations.decide(rev, search_id, face_id)
    rows = gallery_fw.confirmations.export(inv, "CASE-2", search_id=search_id, face_id=face_id)
    assert len(rows) == 1 and rows[0]["confirmed_by"] == ["ines", "rita"]
    assert identity_of(rows[0]["media_path"]) == "obama" and rows[0]["lawful_basis"]
    ev = last_event(gallery_fw)
    assert ev.action == "case.export" and ev.outcome == "ok"
    report = gallery_fw.records.report(gallery_fw.actor(name="admin"))
    case2 = next(c for c in report["cases"] if c["case"] == "CASE-2")
    assert case2["identifications"] == 1 and report["identifications"] == 1
