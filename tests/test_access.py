"""Who may read a case, verify under it, and stay logged in: the holes of issue 17, tried the
way an insider would, against the core (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from facewarden.adapters.storage.tables import AuditEvent, Case, Face, User
from facewarden.core.clock import utcnow
from facewarden.core.errors import NotFound, PermissionDenied, Refused, Unauthenticated

from conftest import REFERENCE, add_user, identity_of, last_event, open_case, probe


@pytest.fixture
def two_cases(gallery_fw, admin):
    """CASE-A: ines (investigator) and rita (reviewer); CASE-B: bert and rosa; an
    unassigned reviewer, a DPO and an auditor. CASE-B has one search with an obama hit."""
    fw = gallery_fw
    users = {
        name: add_user(fw, admin, name, role)
        for name, role in [
            ("ines", "investigator"),
            ("rita", "reviewer"),
            ("bert", "investigator"),
            ("rosa", "reviewer"),
            ("ruth", "reviewer"),
            ("dora", "dpo"),
            ("aldo", "auditor"),
        ]
    }
    open_case(fw, admin, "CASE-A", investigators=["ines", "rita"])
    open_case(fw, admin, "CASE-B", investigators=["bert", "rosa"])
    result = fw.search.search(users["bert"], probe("obama1.jpg"), case="CASE-B")
    top = result.faces[0].candidates[0]
    assert identity_of(top.media_path) == "obama"
    fw.confirmations.decide(users["bert"], result.search_id, top.face_id)
    return fw, users, result.search_id, top.face_id


def case_b_reads(fw, actor, search_id, face_id):
    """Every way to read CASE-B's records."""
    return {
        "searches": lambda: fw.confirmations.searches(actor, "CASE-B"),
        "candidates": lambda: fw.confirmations.candidates(actor, "CASE-B"),
        "export": lambda: fw.confirmations.export(actor, "CASE-B"),
        "crop": lambda: fw.gallery.crop(actor, face_id, search_id=search_id),
        "show": lambda: fw.cases.show(actor, "CASE-B"),
        "decide": lambda: fw.confirmations.decide(actor, search_id, face_id, "reject"),
    }


@pytest.mark.parametrize("who", ["ines", "rita", "ruth"])
def test_no_record_of_another_case_is_readable(two_cases, who):
    """A CASE-A investigator, a CASE-A reviewer and a reviewer of no case read nothing of
    CASE-B, not even a crop, and every attempt is logged as refused."""
    fw, users, search_id, face_id = two_cases
    for what, read in case_b_reads(fw, users[who], search_id, face_id).items():
        with pytest.raises(Refused) as exc:
            read()
        assert exc.value.code == "not_assigned", what
        ev = last_event(fw)
        assert (ev.actor, ev.outcome, ev.case_ref) == (who, "refused", "CASE-B"), what
    assert [c.ref for c in fw.cases.list(users[who])] == (["CASE-A"] if who != "ruth" else [])


def test_assigned_people_read_their_case_and_every_crop_view_is_logged(two_cases):
    fw, users, search_id, face_id = two_cases
    for who in ("bert", "rosa"):
        actor = users[who]
        searches = fw.confirmations.searches(actor, "CASE-B")
        assert searches[0]["search_id"] == search_id
        assert fw.confirmations.candidates(actor, "CASE-B")[0].face_id == face_id
        jpeg = fw.gallery.crop(actor, face_id, search_id=search_id)
        assert jpeg[:2] == b"\xff\xd8"
        ev = last_event(fw)
        assert (ev.action, ev.outcome, ev.actor, ev.case_ref) == ("crop.view", "ok", who, "CASE-B")
        assert json.loads(ev.details)["face_id"] == face_id
    # the reviewer's confirmation completes the two-person rule
    assert fw.confirmations.decide(users["rosa"], search_id, face_id).status == "identified"


def test_closed_case_is_readable_only_by_dpo_and_auditor_and_their_reads_are_logged(
    two_cases, admin
):
    fw, users, search_id, face_id = two_cases
    fw.confirmations.decide(users["rosa"], search_id, face_id)
    fw.cases.close(users["bert"], "CASE-B")
    for who in ("bert", "rosa"):
        for what, read in case_b_reads(fw, users[who], search_id, face_id).items():
            if what == "show":  # the description of their own case stays visible
                assert read().status == "closed"
                continue
            with pytest.raises(Refused) as exc:
                read()
            assert exc.value.code == "case_closed", what
    # the admin manages cases but reads no case's records
    with pytest.raises(PermissionDenied):
        fw.confirmations.searches(add_user(fw, admin, "adam", "admin"), "CASE-B")
    for who in ("dora", "aldo"):
        actor = users[who]
        assert fw.confirmations.searches(actor, "CASE-B")[0]["search_id"] == search_id
        ev = last_event(fw)
        assert (ev.action, ev.outcome, ev.actor) == ("case.searches", "ok", who)
        assert json.loads(ev.details)["access"] in ("dpo", "auditor")
        rows = fw.confirmations.export(actor, "CASE-B")  # evidence for court, after closing
        assert [(r["face_id"], r["confirmed_by"]) for r in rows] == [(face_id, ["bert", "rosa"])]
        assert last_event(fw).action == "case.export"
        assert fw.gallery.crop(actor, face_id, search_id=search_id)[:2] == b"\xff\xd8"
        assert last_event(fw).action == "crop.view"


def test_expired_case_is_closed_to_its_members(two_cases):
    fw, users, search_id, face_id = two_cases
    with fw.writes.begin() as s:
        s.execute(
            update(Case).where(Case.ref == "CASE-B").values(expires_at=utcnow() - timedelta(1))
        )
    with pytest.raises(Refused) as exc:
        fw.gallery.crop(users["bert"], face_id, search_id=search_id)
    assert exc.value.code == "case_expired"
    assert fw.gallery.crop(users["dora"], face_id, search_id=search_id)


def test_crop_of_restricted_media_only_for_the_dpo(two_cases, admin):
    fw, users, search_id, face_id = two_cases
    with fw.sessions() as s:
        media_id = s.scalar(select(Face.media_id).where(Face.id == face_id))
    fw.gallery.restrict(users["dora"], media_id)
    for who in ("bert", "rosa", "aldo"):
        with pytest.raises(Refused) as exc:
            fw.gallery.crop(users[who], face_id, search_id=search_id)
        assert exc.value.code == "restricted"
        assert last_event(fw).outcome == "refused"
    assert fw.gallery.crop(users["dora"], face_id, search_id=search_id)[:2] == b"\xff\xd8"
    assert fw.gallery.crop(users["dora"], face_id)[:2] == b"\xff\xd8"
    assert (last_event(fw).action, last_event(fw).outcome) == ("crop.view", "ok")


# -- verify ---------------------------------------------------------------------------------
def ok_verifies(fw, ref: str) -> int:
    with fw.sessions() as s:
        return s.scalar(
            select(func.count()).where(
                AuditEvent.action == "verify",
                AuditEvent.case_ref == ref,
                AuditEvent.outcome == "ok",
            )
        )


@pytest.mark.parametrize(
    ("case", "code"),
    [(None, "case_required"), ("CASE-B", "not_assigned"), ("NOPE", "case_required")],
)
def test_verify_needs_an_open_case_the_caller_is_assigned_to(two_cases, case, code):
    fw, users, *_ = two_cases
    a, b = (REFERENCE / "obama.jpg").read_bytes(), (REFERENCE / "obama2.jpg").read_bytes()
    with pytest.raises(Refused) as exc:
        fw.search.verify(users["ines"], a, b, case=case)
    assert exc.value.code == code
    ev = last_event(fw)
    assert (ev.action, ev.outcome, ev.actor) == ("verify", "refused", "ines")
    assert ok_verifies(fw, case or "") == 0
    assert fw.search.verify(users["ines"], a, b, case="CASE-A").same
    assert ok_verifies(fw, "CASE-A") == 1
    fw.cases.close(users["ines"], "CASE-A")
    with pytest.raises(Refused) as exc:
        fw.search.verify(users["ines"], a, b, case="CASE-A")
    assert exc.value.code == "case_closed"


def test_verify_uses_the_case_quota(gallery_fw, admin):
    open_case(gallery_fw, admin, "TWO", quota=2)
    a, b = (REFERENCE / "obama.jpg").read_bytes(), (REFERENCE / "biden.jpg").read_bytes()
    gallery_fw.search.verify(admin, a, b, case="TWO")
    gallery_fw.search.search(admin, probe("obama1.jpg"), case="TWO")
    for attempt in (
        lambda: gallery_fw.search.verify(admin, a, b, case="TWO"),
        lambda: gallery_fw.search.search(admin, probe("obama1.jpg"), case="TWO"),
    ):
        with pytest.raises(Refused) as exc:
            attempt()
        assert exc.value.code == "quota_exhausted"


# -- tokens and sessions --------------------------------------------------------------------
def test_rotated_token_is_dead_at_once_and_ends_console_sessions(fw, admin):
    token = fw.users.add(admin, "ines", ["investigator"])
    sid, actor = fw.users.start_session(token)
    assert fw.users.session_actor(sid).name == "ines" == actor.name
    new = fw.users.rotate(fw.actor(token=token))  # anyone may rotate their own
    with pytest.raises(Unauthenticated):
        fw.actor(token=token)
    with pytest.raises(Unauthenticated):
        fw.users.session_actor(sid)
    assert fw.actor(token=new).name == "ines"
    ev = last_event(fw)
    assert ev.action == "user.token_rotate" and json.loads(ev.details)["sessions_ended"] == 1
    other = fw.users.add(admin, "olaf", ["investigator"])
    with pytest.raises(PermissionDenied, match="admin"):
        fw.users.rotate(fw.actor(token=other), "ines")
    assert fw.actor(token=new).name == "ines"


def test_disabled_user_cannot_act_and_loses_sessions(fw, admin):
    token = fw.users.add(admin, "ines", ["investigator"])
    sid, _ = fw.users.start_session(token)
    assert fw.users.set_active(admin, "ines", False)["sessions_ended"] == 1
    with pytest.raises(Unauthenticated) as exc:
        fw.actor(token=token)
    assert exc.value.code == "user_disabled"
    with pytest.raises(Unauthenticated):
        fw.users.session_actor(sid)
    with pytest.raises(Unauthenticated):
        fw.users.start_session(token)
    fw.users.set_active(admin, "ines", True)
    assert fw.actor(token=token).name == "ines"
    with pytest.raises(Refused) as exc:
        fw.users.set_active(admin, "admin", False)
    assert exc.value.code == "last_admin"
    with pytest.raises(NotFound):
        fw.users.set_active(admin, "nobody", False)


def test_logout_ends_the_session_on_the_server(fw, admin):
    token = fw.users.add(admin, "ines", ["investigator"])
    sid, _ = fw.users.start_session(token)
    assert fw.users.end_session(sid)
    with pytest.raises(Unauthenticated):
        fw.users.session_actor(sid)
    assert fw.actor(token=token).name == "ines"  # the token itself still works
    with pytest.raises(Unauthenticated):
        fw.users.start_session(token, name="admin")  # a name the token does not belong to


def test_tokens_expire_and_the_list_shows_last_use(fw, admin):
    token = fw.users.add(admin, "ines", ["investigator"])
    listed = {u["name"]: u for u in fw.users.list(admin)}
    assert listed["ines"]["last_used_at"] is None and not listed["ines"]["token_expired"]
    fw.actor(token=token)
    assert {u["name"]: u for u in fw.users.list(admin)}["ines"]["last_used_at"]
    days = fw.settings.token_days
    assert days == 90
    with fw.writes.begin() as s:
        s.execute(
            update(User)
            .where(User.name == "ines")
            .values(token_issued_at=utcnow() - timedelta(days=days, seconds=1))
        )
    with pytest.raises(Unauthenticated) as exc:
        fw.actor(token=token)
    assert exc.value.code == "token_expired"
    assert {u["name"]: u for u in fw.users.list(admin)}["ines"]["token_expired"]
    # its owner may still rotate it (locally), and the new one works
    new = fw.users.rotate(fw.actor(token=token, allow_expired=True))
    assert fw.actor(token=new).name == "ines"
