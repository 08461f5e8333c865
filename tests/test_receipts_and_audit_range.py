"""The data-protection receipts list (what the console's DPO page shows) and the audit log's
time range (the console's audit filters), on the real seeded gallery."""

from __future__ import annotations

from datetime import datetime

import pytest

from facewarden.core.errors import InvalidInput, PermissionDenied

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

    listed = {r["request_id"]: r for r in fw.subjects.receipts(dpo)}
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
    order = [r["request_id"] for r in fw.subjects.receipts(dpo)]
    assert order.index(access["request_id"]) < order.index(erased["request_id"])


def test_receipts_are_the_dpos_and_the_auditors_only(gallery_fw, admin):
    fw = gallery_fw
    auditor = add_user(fw, admin, "aude", "auditor")
    assert fw.subjects.receipts(auditor) == []
    for name, role in (("ines", "investigator"), ("olaf", "operator")):
        with pytest.raises(PermissionDenied):
            fw.subjects.receipts(add_user(fw, admin, name, role))
        ev = last_event(fw)
        assert (ev.actor, ev.action, ev.outcome) == (name, "subject.receipts", "refused")


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
