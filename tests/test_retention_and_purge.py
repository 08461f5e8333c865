"""Retention runs, jurisdiction/source purges with receipts, restriction, users and tokens."""

from datetime import timedelta

import pytest
from sqlalchemy import select

from facewarden.adapters.storage.tables import AuditEvent, Media
from facewarden.core.actors import Actor
from facewarden.core.clock import utcnow
from facewarden.core.errors import InvalidInput, PermissionDenied

from conftest import GALLERY, PROBES, REFERENCE, add_source, identity_of, open_case


@pytest.fixture
def two_countries(fw, admin):
    add_source(fw, admin, "de-press", jurisdiction="DE")
    add_source(fw, admin, "fr-press", jurisdiction="FR")
    fw.ingest.run(admin, [GALLERY / "obama.jpg", GALLERY / "biden.jpg"], "de-press")
    fw.ingest.run(admin, [GALLERY / "rose_leslie.jpg", GALLERY / "kit_harington.jpg"], "fr-press")
    open_case(fw, admin)
    return fw


def found(fw, actor, probe):
    res = fw.search.search(actor, probe.read_bytes(), case="CASE-1")
    return {identity_of(c.media_path) for f in res.faces for c in f.candidates}


def test_purge_jurisdiction_deletes_only_that_country_with_receipt(two_countries, admin):
    receipt = two_countries.gallery.purge(admin, jurisdiction="de")
    assert receipt["media"] == 2 and receipt["faces"] == 2 and receipt["by"] == "admin"
    assert receipt["scope"] == {"jurisdiction": "DE"} and len(receipt["media_digest"]) == 64
    with two_countries.sessions() as s:
        ev = s.get(AuditEvent, receipt["audit_seq"])
        left = sorted(identity_of(p) for p in s.scalars(select(Media.path)))
    assert ev.action == "purge" and receipt["media_digest"] in ev.details
    assert left == ["kit_harington", "rose_leslie"]
    assert found(two_countries, admin, PROBES / "obama1.jpg") == set()
    assert "kit_harington" in found(two_countries, admin, PROBES / "johnsnow_test1.jpg")
    assert two_countries.audit.verify().ok


def test_purge_source_and_bad_scope(two_countries, admin):
    assert two_countries.gallery.purge(admin, source="fr-press")["media"] == 2
    assert [s.media for s in two_countries.sources.list()] == [2, 0]
    with pytest.raises(InvalidInput):
        two_countries.gallery.purge(admin, jurisdiction="DE", source="fr-press")


def test_purge_needs_dpo_and_refusal_is_logged(two_countries):
    operator = Actor("ops", frozenset({"operator"}))
    with pytest.raises(PermissionDenied, match="dpo"):
        two_countries.gallery.purge(operator, jurisdiction="DE")
    assert two_countries.audit.events()[-1]["outcome"] == "refused"
    assert two_countries.stats()["media"] == 4


def test_retention_run_removes_only_expired_media(two_countries, admin):
    with two_countries.sessions.begin() as s:
        for m in s.scalars(select(Media)):
            if identity_of(m.path) == "obama":
                m.expires_at = utcnow() - timedelta(days=1)
    receipt = two_countries.gallery.retention_run(admin)
    assert receipt["media"] == 1 and receipt["faces"] == 1
    assert two_countries.stats()["media"] == 3 == two_countries.stats()["index_size"]
    assert two_countries.gallery.retention_run(admin)["media"] == 0


def test_restricted_media_is_kept_but_never_found(two_countries, admin):
    with two_countries.sessions() as s:
        obama = next(m.id for m in s.scalars(select(Media)) if identity_of(m.path) == "obama")
    two_countries.gallery.restrict(admin, obama)
    assert "obama" not in found(two_countries, admin, REFERENCE / "obama2.jpg")
    assert two_countries.stats()["media"] == 4
    two_countries.gallery.restrict(admin, obama, restricted=False)
    assert "obama" in found(two_countries, admin, REFERENCE / "obama2.jpg")


def test_users_tokens_and_roles(fw, admin):
    token = fw.users.add(admin, "rita", ["reviewer"])
    assert fw.actor(token=token) == Actor("rita", frozenset({"reviewer"}))
    with pytest.raises(PermissionDenied):
        fw.actor(token="not-a-token")
    with pytest.raises(PermissionDenied, match="admin"):
        fw.users.add(fw.actor(token=token), "eve", ["admin"])
    with pytest.raises(InvalidInput, match="unknown"):
        fw.users.add(admin, "bob", ["superuser"])
    with pytest.raises(PermissionDenied, match="investigator"):
        fw.search.search(
            fw.actor(token=token), (REFERENCE / "obama.jpg").read_bytes(), case="CASE-1"
        )
    # no credential, no actor (a bare name is only the in-process look-up)
    with pytest.raises(PermissionDenied, match="no credential"):
        fw.actor()
