"""The audit chain is MAC'd under a key the database does not hold, and anchored outside the
database: an insider who rewrites the log is caught, whether or not they hold the audit key."""

import json
import logging
import os
import subprocess
import sys

import pytest
from sqlalchemy import text

from facewarden.adapters.storage import db
from facewarden.core.errors import NotInitialised
from facewarden.services.app import Facewarden
from facewarden.services.audit import GENESIS, HASHED_FIELDS, record_hash, record_mac

from conftest import PROBES, add_source, make_settings, open_case


def sql(fw, statement, **params):
    with fw.engine.begin() as conn:
        conn.execute(text(statement), params)


def rows(fw) -> list[dict]:
    with fw.engine.connect() as conn:
        return [
            dict(r._mapping) for r in conn.execute(text("SELECT * FROM audit_events ORDER BY seq"))
        ]


def rewrite_from(fw, rows_after: list[dict], prev: str, seal) -> None:
    """What an insider with database access does: renumber and re-seal the records after a
    deletion, so every link and every hash is consistent again."""
    for r in rows_after:
        r["prev_hash"] = prev
        r["hash"] = seal(r)
        sql(
            fw,
            "UPDATE audit_events SET prev_hash = :p, hash = :h, chain = :c WHERE seq = :s",
            p=r["prev_hash"],
            h=r["hash"],
            c=r["chain"],
            s=r["seq"],
        )
        prev = r["hash"]


def delete_and_reseal(fw, victim: int, seal, chain: int) -> None:
    """Delete record ``victim``, renumber the ones after it, recompute the chain."""
    sql(fw, "DELETE FROM audit_events WHERE seq = :s", s=victim)
    sql(fw, "UPDATE audit_events SET seq = seq + 100000 WHERE seq > :s", s=victim)
    sql(fw, "UPDATE audit_events SET seq = seq - 100001 WHERE seq > 100000")
    # the hash column is unique: clear the old values first
    sql(fw, "UPDATE audit_events SET hash = 'tmp' || seq WHERE seq >= :s", s=victim)
    after = [r | {"chain": chain} for r in rows(fw) if r["seq"] >= victim]
    prev = next(r["hash"] for r in rows(fw) if r["seq"] == victim - 1)
    rewrite_from(fw, after, prev, seal)


@pytest.fixture
def searched(tmp_path, database_url, pipeline):
    def make(**kw):
        settings = make_settings(tmp_path / "data", database_url, **kw)
        fw, _ = Facewarden.init(settings, pipeline=pipeline)
        admin = fw.actor(name="admin")
        add_source(fw, admin)
        fw.ingest.run(admin, [PROBES / "obama1.jpg"], "press")
        open_case(fw, admin)
        for name in ("obama1.jpg", "kit_with_rose.jpg", "obama_and_biden.jpg"):
            fw.search.search(admin, (PROBES / name).read_bytes(), case="CASE-1")
        assert fw.audit.verify().ok
        return fw

    yield make


def search_seq(fw) -> int:
    return next(r["seq"] for r in rows(fw) if r["action"] == "search")


def test_deleted_search_resealed_with_the_unkeyed_hash_is_detected(searched):
    """The issue's attack: delete a search record and recompute the following hashes with the
    project's own hash function. Caught at the first re-sealed record."""
    fw = searched()
    victim = search_seq(fw)
    fields = lambda r: {k: r[k] for k in HASHED_FIELDS}  # noqa: E731
    delete_and_reseal(fw, victim, lambda r: record_hash(fields(r)), chain=2)
    report = fw.audit.verify()
    assert not report.ok and report.first_bad_seq == victim and "hash" in report.reason
    # and marking the re-sealed records as the old unkeyed chain does not help
    delete_and_reseal(fw, victim, lambda r: record_hash(fields(r)), chain=1)
    report = fw.audit.verify()
    assert not report.ok and report.first_bad_seq == victim and "chain version" in report.reason


def test_whole_log_resealed_without_the_key_is_detected(searched):
    fw = searched()
    sql(fw, "UPDATE audit_events SET hash = 'tmp' || seq")
    rewrite_from(
        fw,
        [r | {"chain": 1} for r in rows(fw)],
        GENESIS,
        lambda r: record_hash({k: r[k] for k in HASHED_FIELDS}),
    )
    report = fw.audit.verify()
    assert not report.ok
    assert "rewritten" in report.reason or "MAC'd" in report.reason


def test_rewrite_with_the_audit_key_is_caught_by_the_anchors(searched):
    """An insider holding the audit key too re-seals a consistent chain; the anchors written
    outside the database still name the old hashes."""
    fw = searched(audit_anchor_every=2)
    anchors = [json.loads(x) for x in fw.settings.resolved_anchor_file.read_text().splitlines()]
    assert len(anchors) >= 3 and all("mac" in a for a in anchors)
    victim = search_seq(fw)
    key = fw.audit.key
    delete_and_reseal(fw, victim, lambda r: record_mac(key, r), chain=2)
    report = fw.audit.verify()
    assert not report.ok and "rewritten" in report.reason
    assert report.first_bad_seq <= victim


def test_truncation_after_an_anchor_is_detected(searched):
    fw = searched(audit_anchor_every=3)
    last = json.loads(fw.settings.resolved_anchor_file.read_text().splitlines()[-1])
    sql(fw, "DELETE FROM audit_events WHERE seq >= :s", s=last["seq"] - 1)
    report = fw.audit.verify()
    assert not report.ok and "truncated" in report.reason
    assert report.first_bad_seq == last["seq"] - 1


def test_deleted_or_forged_anchor_file_is_detected(searched):
    fw = searched()
    path = fw.settings.resolved_anchor_file
    lines = path.read_text().splitlines()
    forged = json.loads(lines[-1]) | {"hash": "0" * 64}
    path.write_text("\n".join([*lines, json.dumps(forged)]) + "\n")
    report = fw.audit.verify()
    assert not report.ok and "does not verify" in report.reason
    path.unlink()
    report = fw.audit.verify()
    assert not report.ok and "missing or empty" in report.reason
    # Later commits do not recreate it (a fresh file would hide what the old one anchored).
    fw.audit.anchors.seconds = 1e-6
    add_source(fw, fw.actor(name="admin"), "after")
    assert not path.exists() and not fw.audit.verify().ok
    fw.engine.dispose()
    fw, _ = Facewarden.init(fw.settings, pipeline=fw.pipeline)  # nor does init
    assert not path.exists()
    # An explicit restart does, and says so in the MAC'd log.
    admin = fw.actor(name="admin")
    anchor = fw.oversight.restart_anchors(admin)
    assert fw.audit.events(action="audit.anchor_restart")[0]["seq"] == anchor["seq"]
    assert fw.audit.verify().ok


def test_anchors_are_written_automatically_by_count_and_by_age(
    tmp_path, database_url, pipeline, caplog
):
    settings = make_settings(tmp_path / "data", database_url, audit_anchor_every=4)
    fw, _ = Facewarden.init(settings, pipeline=pipeline)
    admin = fw.actor(name="admin")
    path = settings.resolved_anchor_file
    assert [json.loads(x)["seq"] for x in path.read_text().splitlines()] == [1]
    with caplog.at_level(logging.INFO, logger="facewarden.audit"):
        for n in range(9):
            add_source(fw, admin, f"s{n}")
    seqs = [json.loads(x)["seq"] for x in path.read_text().splitlines()]
    assert seqs == [1, 4, 8]
    assert "audit anchor seq=8" in caplog.text  # the server log gets each anchor too
    # By age: with the interval elapsed, the next record is anchored at once.
    fw.audit.anchors.seconds = 1e-6
    add_source(fw, admin, "late")
    assert json.loads(path.read_text().splitlines()[-1])["seq"] == fw.audit.head()["seq"]
    assert stat_mode(path) == 0o600
    fw.engine.dispose()


def stat_mode(path) -> int:
    return os.stat(path).st_mode & 0o777


def test_cli_verify_exits_1_naming_the_first_bad_record(searched):
    fw = searched()
    token = fw.users.rotate(fw.actor(name="admin"))  # the CLI acts by a credential
    victim = search_seq(fw)
    delete_and_reseal(fw, victim, lambda r: record_hash({k: r[k] for k in HASHED_FIELDS}), chain=2)
    env = os.environ | {
        "FACEWARDEN_DATA_DIR": str(fw.settings.data_dir),
        "COLUMNS": "200",
        "FACEWARDEN_TOKEN": token,
    }
    if fw.settings.database_url:
        env["FACEWARDEN_DATABASE_URL"] = fw.settings.database_url
    proc = subprocess.run(
        [sys.executable, "-m", "facewarden", "audit", "verify"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"broken at record {victim}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_lost_audit_key_is_never_replaced(searched):
    fw = searched()
    settings = fw.settings
    fw.engine.dispose()
    settings.resolved_audit_key_file.unlink()
    with pytest.raises(NotInitialised) as exc:
        Facewarden.init(settings)
    assert exc.value.code == "key_missing" and not settings.resolved_audit_key_file.exists()


def test_existing_sha256_log_is_migrated_explicitly(tmp_path, database_url, pipeline):
    """A log written before the audit key (chain 1) stays verifiable; init MAC's the switch
    point; an unkeyed rewrite of the old part is still detected."""
    from alembic import command

    settings = make_settings(tmp_path / "data", database_url)
    settings.data_dir.mkdir(parents=True)
    engine = db.make_engine(settings.resolved_database_url)
    cfg = db.alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
    prev = GENESIS
    with engine.begin() as conn:
        for seq in (1, 2, 3):
            row = {k: None for k in HASHED_FIELDS} | {
                "seq": seq,
                "ts": f"2026-01-0{seq}T00:00:00+00:00",
                "actor": "old",
                "action": "legacy",
                "details": "{}",
                "outcome": "ok",
                "prev_hash": prev,
            }
            row["hash"] = prev = record_hash(row)
            cols = ", ".join(row)
            conn.execute(
                text(
                    f"INSERT INTO audit_events ({cols}) VALUES ({', '.join(':' + c for c in row)})"
                ),
                row,
            )
    engine.dispose()
    fw, _ = Facewarden.init(settings, pipeline=pipeline)
    log = rows(fw)
    assert [r["chain"] for r in log[:3]] == [1, 1, 1]
    switch = log[3]
    assert switch["action"] == "audit.mac" and switch["chain"] == 2
    assert json.loads(switch["details"]) == {"continues_seq": 3, "continues_hash": prev}
    assert fw.audit.verify().ok
    sql(fw, "UPDATE audit_events SET actor = 'other' WHERE seq = 2")
    assert fw.audit.verify().first_bad_seq == 2
    fw.engine.dispose()


def test_audit_key_from_the_environment_and_a_replaced_key(tmp_path, database_url, pipeline):
    """FACEWARDEN_AUDIT_KEY instead of a file; another audit key cannot verify the log (nor
    its anchors), so swapping the key does not launder a rewrite."""
    settings = make_settings(tmp_path / "data", database_url, audit_key="ab" * 32)
    fw, _ = Facewarden.init(settings, pipeline=pipeline)
    add_source(fw, fw.actor(name="admin"))
    assert not settings.resolved_audit_key_file.exists()
    assert fw.audit.key == bytes.fromhex("ab" * 32) and fw.audit.verify().ok
    fw.engine.dispose()
    other = make_settings(tmp_path / "data", database_url, audit_key="cd" * 32)
    report = Facewarden(other, pipeline).audit.verify()
    assert not report.ok and "audit key" in report.reason
