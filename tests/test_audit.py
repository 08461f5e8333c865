"""The audit log is hash-chained: edits, deletions, insertions and reorderings are detected."""

import itertools
import json

import pytest
from sqlalchemy import text

from facewarden.core.errors import AuditFailure, Refused
from facewarden.services.audit import GENESIS, record_mac

from conftest import PROBES, last_event, probe


@pytest.fixture
def logged(gallery_fw, admin):
    for name in ("obama1.jpg", "kit_with_rose.jpg", "alex_lacamoire1.jpg"):
        gallery_fw.search.search(admin, (PROBES / name).read_bytes(), case="CASE-1")
    report = gallery_fw.audit.verify()
    assert report.ok and report.records >= 8
    return gallery_fw


def sql(fw, statement, **params):
    with fw.engine.begin() as conn:
        conn.execute(text(statement), params)


def test_chain_links_every_record(logged):
    events = logged.audit.events()
    assert events[0]["prev_hash"] == GENESIS
    for prev, ev in itertools.pairwise(events):
        assert ev["prev_hash"] == prev["hash"] and ev["seq"] == prev["seq"] + 1


def test_edited_record_is_detected(logged):
    sql(logged, "UPDATE audit_events SET actor = 'someone-else' WHERE seq = 5")
    report = logged.audit.verify()
    assert not report.ok and report.first_bad_seq == 5 and "hash" in report.reason


def test_edited_results_are_detected(logged):
    ev = next(e for e in logged.audit.events() if e["action"] == "search")
    details = ev["details"]
    details["faces"][0]["results"] = []
    sql(
        logged,
        "UPDATE audit_events SET details = :d WHERE seq = :s",
        d=json.dumps(details),
        s=ev["seq"],
    )
    assert logged.audit.verify().first_bad_seq == ev["seq"]


def test_deleted_record_is_detected(logged):
    sql(logged, "DELETE FROM audit_events WHERE seq = 4")
    report = logged.audit.verify()
    assert not report.ok and report.first_bad_seq == 5 and "gap" in report.reason


def test_inserted_record_is_detected(logged):
    """A forged record, even with a self-consistent MAC (the forger holds the audit key),
    breaks the link of its successor."""
    events = logged.audit.events()
    last = events[-1]
    # shift the tail up by one to make room for a forged record at seq 3
    sql(logged, "UPDATE audit_events SET seq = seq + 1000 WHERE seq >= 3")
    sql(logged, "UPDATE audit_events SET seq = seq - 999 WHERE seq >= 1000")
    forged = {k: events[1][k] for k in events[1] if k != "hash"}
    forged |= {
        "seq": 3,
        "prev_hash": events[1]["hash"],
        "action": "search",
        "details": "{}",
        "actor": "ghost",
    }
    forged["hash"] = record_mac(logged.audit.key, forged)
    forged["chain"] = 2
    cols = ", ".join(forged)
    sql(
        logged,
        f"INSERT INTO audit_events ({cols}) VALUES ({', '.join(':' + c for c in forged)})",
        **forged,
    )
    report = logged.audit.verify()
    assert not report.ok and report.first_bad_seq == 4 and "link" in report.reason
    assert report.records <= last["seq"] + 1


def test_reordered_records_are_detected(logged):
    sql(logged, "UPDATE audit_events SET seq = -1 WHERE seq = 6")
    sql(logged, "UPDATE audit_events SET seq = 6 WHERE seq = 7")
    sql(logged, "UPDATE audit_events SET seq = 7 WHERE seq = -1")
    report = logged.audit.verify()
    assert not report.ok and report.first_bad_seq == 6


def test_audit_never_holds_a_template(logged):
    import base64

    ids = sorted(logged.index.ids().tolist())
    _, vecs = logged.load_templates(ids)
    dump = json.dumps(logged.audit.events())
    for v in vecs:
        raw = v.astype("<f4").tobytes()
        for needle in (
            repr(float(v[0])),
            f"{float(v[1]):.6f}",
            raw[:12].hex(),
            base64.b64encode(raw[:12]).decode(),
        ):
            assert needle not in dump


def test_search_fails_when_audit_cannot_be_written(logged, admin):
    """There is no unlogged search: if the log refuses the write, the search fails."""
    if logged.engine.dialect.name == "sqlite":
        sql(
            logged,
            "CREATE TRIGGER no_audit BEFORE INSERT ON audit_events "
            "BEGIN SELECT RAISE(ABORT, 'audit store unavailable'); END",
        )
    else:
        sql(
            logged,
            "CREATE FUNCTION no_audit() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'audit store unavailable'; END $$ LANGUAGE plpgsql",
        )
        sql(
            logged,
            "CREATE TRIGGER no_audit BEFORE INSERT ON audit_events "
            "FOR EACH ROW EXECUTE FUNCTION no_audit()",
        )
    with pytest.raises(AuditFailure, match="audit"):
        logged.search.search(admin, (PROBES / "obama1.jpg").read_bytes(), case="CASE-1")


def test_an_overlong_case_reference_is_refused_and_still_audited(gallery_fw, admin):
    """A refused request naming a reference wider than the column (PostgreSQL enforces
    varchar(100)) must not turn into an audit failure."""
    ref = "X" * 300
    with pytest.raises(Refused) as exc:
        gallery_fw.search.search(admin, probe("obama1.jpg"), case=ref)
    assert exc.value.code == "case_required"
    ev = last_event(gallery_fw)
    assert ev.outcome == "refused" and ev.case_ref.startswith("X" * 99) and len(ev.case_ref) == 100
    assert json.loads(ev.details)["case_ref_full"] == ref
    assert gallery_fw.audit.verify().ok
