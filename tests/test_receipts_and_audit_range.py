"""The data-protection receipts list (what the console's DPO page shows: its pages, its kinds,
the physical purges) and the audit log's time range (the console's audit filters), on the
real seeded gallery."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import select

from facewarden.adapters.storage.tables import Media
from facewarden.core.errors import InvalidInput, PermissionDenied
from facewarden.core.limits import RECEIPT_KINDS
from facewarden.services.subjects import LOGGED_ACTIONS, REQUEST_ACTIONS

from conftest import REFERENCE, add_user, last_event

SELFIE = (REFERENCE / "obama.jpg").read_bytes()
BIDEN = (REFERENCE / "biden.jpg").read_bytes()


def test_receipts_list_every_request_with_the_counts_of_its_receipt(gallery_fw, admin):
    fw = gallery_fw
    dpo = add_user(fw, admin, "dora", "dpo")
    erased = fw.subjects.erase(dpo, SELFIE, reference="DSR-1")
    # Beyond a strict 0.2 nothing is erased: the candidates are left for the DPO's review.
    held = fw.subjects.erase(dpo, BIDEN, reference="DSR-2", threshold=0.2)
    pending = [f["face_id"] for f in held["review"]]
    assert pending and held["faces"] == 0
    decided = fw.subjects.review(dpo, held["request_id"], release=pending)
    access = fw.subjects.access(dpo, BIDEN, reference="DSR-3")

    listed = {r["request_id"]: r for r in fw.subjects.receipts(dpo)["receipts"]}
    assert listed[access["request_id"]]["kind"] == "access"
    assert listed[access["request_id"]]["counts"]["matches"] == len(access["matches"])
    for receipt in (erased, held):
        entry = listed[receipt["request_id"]]
        assert entry["kind"] == "erasure" and entry["reference"] == receipt["reference"]
        assert entry["counts"] == {
            "faces_erased": receipt["faces"],
            "collateral_beyond_strict": receipt["collateral"]["erased_beyond_strict_threshold"],
            "collateral_withheld": receipt["collateral"]["withheld_pending_review"],
            "residue": len(receipt["residue"]["face_ids"]),
        }
        # The stored receipt itself, unchanged (its hash still matches).
        assert {k: entry["receipt"][k] for k in receipt} == receipt
        assert entry["receipt_sha256"] == receipt["receipt_sha256"]
    assert listed[erased["request_id"]]["counts"]["faces_erased"] == 1
    assert listed[held["request_id"]]["counts"]["collateral_withheld"] == len(pending)
    review = listed[decided["request_id"]]
    assert review["kind"] == "erasure-review"
    assert review["counts"] == {"faces_erased": 0, "released": len(pending), "still_pending": 0}
    # Newest first.
    order = [r["request_id"] for r in fw.subjects.receipts(dpo)["receipts"]]
    assert order.index(access["request_id"]) < order.index(erased["request_id"])


def test_receipts_are_the_dpos_and_the_auditors_only(gallery_fw, admin):
    fw = gallery_fw
    auditor = add_user(fw, admin, "aude", "auditor")
    assert fw.subjects.receipts(auditor) == {"receipts": [], "next": None}
    for name, role in (("ines", "investigator"), ("olaf", "operator")):
        with pytest.raises(PermissionDenied):
            fw.subjects.receipts(add_user(fw, admin, name, role))
        ev = last_event(fw)
        assert (ev.actor, ev.action, ev.outcome) == (name, "subject.receipts", "refused")
        # Paging or filtering changes nothing: the role is checked first, and logged.
        with pytest.raises(PermissionDenied):
            fw.subjects.receipts(fw.actor(name=name), limit=1, kind="purge")
        assert last_event(fw).outcome == "refused"


def test_audit_events_until_bounds_the_time_range(gallery_fw, admin):
    fw = gallery_fw
    auditor = add_user(fw, admin, "aude", "auditor")
    events = fw.audit.events()
    assert len(events) >= 3
    middle = events[len(events) // 2]
    until = datetime.fromisoformat(middle["ts"])
    got = fw.oversight.events(auditor, until=until)
    assert got and all(e["ts"] <= middle["ts"] for e in got)
    assert middle["seq"] in [e["seq"] for e in got]  # inclusive, to the microsecond
    assert len(got) < len(fw.audit.events())
    since = datetime.fromisoformat(events[1]["ts"])
    window = fw.oversight.events(auditor, since=since, until=until)
    assert {e["seq"] for e in window} == {
        e["seq"] for e in events if events[1]["ts"] <= e["ts"] <= middle["ts"]
    }
    assert fw.oversight.events(auditor, until=datetime(2021, 1, 1)) == []
    with pytest.raises(InvalidInput, match="ends before it starts"):
        fw.oversight.events(auditor, since=until, until=datetime(2021, 1, 1))
    assert last_event(fw, "audit.read").details.count("until") == 1


def every_page(fw, actor, limit: int, **filters) -> list[list[dict]]:
    pages, before = [], None
    while True:
        page = fw.subjects.receipts(actor, limit=limit, before_seq=before, **filters)
        pages.append(page["receipts"])
        if page["next"] is None:
            return pages
        assert page["next"] == page["receipts"][-1]["audit_seq"]
        before = page["next"]


def test_receipt_pages_cover_every_receipt_once_in_order_while_new_ones_arrive(gallery_fw, admin):
    fw = gallery_fw
    dpo = add_user(fw, admin, "dora", "dpo")
    erased = fw.subjects.erase(dpo, SELFIE, reference="DSR-1")
    fw.subjects.access(dpo, BIDEN, reference="DSR-2")
    purges = [fw.gallery.purge_index(dpo) for _ in range(9)]
    everything = fw.subjects.receipts(dpo, limit=500)
    assert everything["next"] is None
    whole = everything["receipts"]
    assert len(whole) == 11
    # Newest first by the audit record (time order, unique), the time never going up.
    seqs = [r["audit_seq"] for r in whole]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == len(seqs)
    assert [r["at"] for r in whole] == sorted((r["at"] for r in whole), reverse=True)
    assert seqs[0] == purges[-1]["audit_seq"] and seqs[-1] == erased["audit_seq"]

    pages = every_page(fw, dpo, 4)
    assert [len(p) for p in pages] == [4, 4, 3]
    assert [r["id"] for p in pages for r in p] == [r["id"] for r in whole]

    # A receipt written between two page fetches is newer than the cursor: the next pages
    # neither repeat a receipt nor skip one, and the new one heads the list fetched afresh.
    first = fw.subjects.receipts(dpo, limit=4)
    late = fw.subjects.access(dpo, SELFIE, reference="DSR-LATE")
    fw.gallery.purge_index(admin)
    rest, before = [], first["next"]
    while before is not None:
        page = fw.subjects.receipts(dpo, limit=4, before_seq=before)
        rest += page["receipts"]
        before = page["next"]
    got = [r["id"] for r in first["receipts"] + rest]
    assert got == [r["id"] for r in whole] and len(set(got)) == len(got)
    fresh = fw.subjects.receipts(dpo, limit=2)["receipts"]
    assert [r["kind"] for r in fresh] == ["purge", "access"]
    assert fresh[1]["request_id"] == late["request_id"]

    # Filtered pages: kind and reference are applied before the page is cut.
    purge_pages = every_page(fw, dpo, 3, kind="purge")
    assert [len(p) for p in purge_pages] == [3, 3, 3, 1]
    assert all(r["kind"] == "purge" for p in purge_pages for r in p)
    assert [r["id"] for r in fw.subjects.receipts(dpo, reference="dsr-l")["receipts"]] == [
        f"request-{late['request_id']}"
    ]
    assert (
        fw.subjects.receipts(dpo, kind="erasure")["receipts"][0]["request_id"]
        == (erased["request_id"])
    )
    # The last page: exactly full, no next.
    assert fw.subjects.receipts(dpo, limit=13) == fw.subjects.receipts(dpo, limit=14)


def test_a_physical_purge_is_a_receipt_naming_the_erasures_it_covers(gallery_fw, admin):
    fw = gallery_fw
    dpo = add_user(fw, admin, "dora", "dpo")
    olaf = add_user(fw, admin, "olaf", "operator")
    erased = fw.subjects.erase(dpo, SELFIE, reference="DSR-1")
    with fw.sessions() as session:
        media_id = session.scalars(select(Media.id).order_by(Media.id)).first()
    fw.gallery.delete_media(admin, [media_id])  # a deletion that is no rights request
    deleted = last_event(fw, "delete")
    purge = fw.gallery.purge_index(olaf)
    assert purge["covers_audit_seqs"] == [erased["audit_seq"], deleted.seq]
    entry = fw.subjects.receipts(dpo)["receipts"][0]
    event = last_event(fw, "index.purge")
    assert entry["kind"] == "purge" and entry["id"] == f"audit-{event.seq}"
    assert (entry["by"], entry["at"], entry["audit_seq"]) == ("olaf", event.ts, event.seq)
    # Its hash is its audit record's (a purge has no stored receipt of its own).
    assert entry["audit_hash"] == event.hash and entry["receipt_sha256"] is None
    receipt = entry["receipt"]
    assert receipt["covers_audit_seqs"] == purge["covers_audit_seqs"]
    assert receipt["covers_request_ids"] == [erased["request_id"]]
    assert receipt["actions"] == purge["actions"] and receipt["audit_hash"] == event.hash
    assert entry["counts"] == {
        "deletions_covered": 2,
        "erasure_requests": 1,
    }
    # The erasure's own entry carries its audit record's hash too; filter by kind.
    assert [r["id"] for r in fw.subjects.receipts(dpo, kind="purge")["receipts"]] == [entry["id"]]
    erasure = fw.subjects.receipts(dpo, kind="erasure")["receipts"]
    assert [r["request_id"] for r in erasure] == [erased["request_id"]]
    assert erasure[0]["audit_hash"] == last_event(fw, "subject.erase").hash
    # A purge with nothing pending is listed too, covering nothing.
    again = fw.gallery.purge_index(olaf)
    empty = fw.subjects.receipts(dpo, limit=1)["receipts"][0]
    assert empty["audit_seq"] == again["audit_seq"] and empty["receipt"]["covers_audit_seqs"] == []
    assert empty["counts"] == {"deletions_covered": 0, "erasure_requests": 0}
    assert empty["receipt"]["covers_request_ids"] == []


def test_receipt_kinds_are_the_request_and_logged_ones():
    assert set(RECEIPT_KINDS) == set(REQUEST_ACTIONS) | set(LOGGED_ACTIONS)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": 0}, "limit must be 1 to 500"),
        ({"limit": 501}, "limit must be 1 to 500"),
        ({"limit": -5}, "limit must be 1 to 500"),
        ({"before_seq": 0}, "before_seq 0 is out of range"),
        ({"before_seq": 2**40}, "out of range"),
        ({"kind": "bogus"}, "kind must be one of access, erasure"),
        ({"kind": ""}, "kind must be one of"),
        ({"reference": "x" * 201}, "reference"),
        ({"reference": "a\x00b"}, "reference"),
    ],
)
def test_bad_paging_parameters_are_refused_clearly(gallery_fw, admin, params, message):
    dpo = add_user(gallery_fw, admin, "dora", "dpo")
    with pytest.raises(InvalidInput, match=message):
        gallery_fw.subjects.receipts(dpo, **params)


def test_the_receipts_list_reads_receipt_records_by_index_not_the_whole_log(gallery_fw, admin):
    """Receipts are a few records among what may be millions of searches: the list's query
    must reach them through the index on (action, seq). The SQL the service runs is captured
    and explained on SQLite; every request-linked record's action is a receipt action."""
    from sqlalchemy import event

    from facewarden.adapters.storage.tables import AuditEvent, SubjectRequest
    from facewarden.services.subjects import RECEIPT_ACTIONS

    fw = gallery_fw
    dpo = add_user(fw, admin, "dora", "dpo")
    fw.subjects.access(dpo, BIDEN, reference="DSR-IDX")
    with fw.sessions() as s:
        linked = s.scalars(
            select(AuditEvent.action).join(
                SubjectRequest, SubjectRequest.audit_seq == AuditEvent.seq
            )
        ).all()
    assert linked and set(linked) <= set(RECEIPT_ACTIONS)
    if fw.engine.dialect.name != "sqlite":
        return  # PostgreSQL's plan depends on its statistics; the index exists there too
    seen: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if "FROM audit_events" in statement and "ORDER BY audit_events.seq DESC" in statement:
            seen.append((statement, parameters))

    event.listen(fw.engine, "before_cursor_execute", capture)
    try:
        assert fw.subjects.receipts(dpo, kind="access")["receipts"]
        assert fw.subjects.receipts(dpo)["receipts"]
    finally:
        event.remove(fw.engine, "before_cursor_execute", capture)
    assert len(seen) == 2
    with fw.engine.connect() as conn:
        for statement, parameters in seen:
            plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
            text = " | ".join(str(row[-1]) for row in plan)
            assert "ix_audit_action_seq" in text, text
            assert "SCAN audit_events" not in text, text
