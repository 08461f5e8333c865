"""Transparency (notice, production mode, records report), audit anchors, schema upgrades."""

import pytest
from alembic import command
from sqlalchemy import text

from facewarden.adapters.storage import db
from facewarden.core.errors import ConfigurationError, PermissionDenied
from facewarden.services.app import Facewarden

from conftest import add_source, add_user, last_event, make_settings, probe


def test_notice_is_rendered_from_configuration_and_sources(tmp_path, database_url, pipeline):
    settings = make_settings(
        tmp_path / "d",
        database_url,
        controller_name="Landeskriminalamt Musterland",
        controller_contact="Musterstr. 1, 12345 Musterstadt",
        dpo_contact="dpo@lka.example",
    )
    fw, _ = Facewarden.init(settings, pipeline=pipeline)
    add_source(fw, fw.actor(name="admin"), note="press agency photos under licence")
    text_ = fw.records.notice()
    for expected in (
        "Landeskriminalamt Musterland",
        "dpo@lka.example",
        "identification of suspects in serious crime",
        "Art. 6(1)(e) GDPR; national police act s.12",
        "press (DE): press agency photos under licence; kept 365 days",
        "**Erasure:**",
    ):
        assert expected in text_
    fw.engine.dispose()


def test_production_mode_refuses_to_start_without_controller(tmp_path, database_url, pipeline):
    settings = make_settings(tmp_path / "d", database_url, production=True, controller_name="X")
    with pytest.raises(ConfigurationError, match="FACEWARDEN_CONTROLLER_CONTACT") as exc:
        Facewarden.init(settings, pipeline=pipeline)
    assert "FACEWARDEN_DPO_CONTACT" in exc.value.message
    complete = settings.model_copy(update={"controller_contact": "c", "dpo_contact": "d"})
    fw, token = Facewarden.init(complete, pipeline=pipeline)
    assert token
    fw.engine.dispose()


def test_report_counts_holdings_searches_and_requests(gallery_fw, admin):
    gallery_fw.search.search(admin, probe("obama1.jpg"), case="CASE-1")
    gallery_fw.subjects.access(admin, probe("obama1.jpg"))
    report = gallery_fw.records.report(admin)
    assert report["sources"] == [
        {
            "source": "press",
            "jurisdiction": "DE",
            "lawful_basis": "Art. 6(1)(e) GDPR; national police act s.12",
            "retention_days": 365.0,
            "media": 5,
            "faces": 5,
        }
    ]
    assert report["jurisdictions"] == {"DE": {"media": 5, "faces": 5}}
    assert [(c["case"], c["searches"]) for c in report["cases"]] == [("CASE-1", 1)]
    assert [r["kind"] for r in report["rights_requests"]] == ["access"]
    assert report["audit_head"]["seq"] == last_event(gallery_fw).seq - 1
    assert last_event(gallery_fw).action == "report"
    inv = add_user(gallery_fw, admin, "ines", "investigator")
    with pytest.raises(PermissionDenied):
        gallery_fw.records.report(inv)
    auditor = add_user(gallery_fw, admin, "aude", "auditor")
    assert gallery_fw.records.report(auditor)["sources"][0]["faces"] == 5


def test_anchor_detects_truncation_of_the_newest_records(gallery_fw, admin):
    gallery_fw.search.search(admin, probe("obama1.jpg"), case="CASE-1")
    anchor = gallery_fw.audit.head()
    assert anchor["seq"] == last_event(gallery_fw).seq
    gallery_fw.search.search(admin, probe("obama1.jpg"), case="CASE-1")
    assert gallery_fw.audit.verify([anchor]).ok
    # Cutting off the newest records leaves a valid chain: only an anchor reveals it.
    with gallery_fw.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq >= :s"), {"s": anchor["seq"]})
    assert gallery_fw.audit.verify().ok
    report = gallery_fw.audit.verify([anchor])
    assert not report.ok and report.first_bad_seq == anchor["seq"]
    assert "truncated" in report.reason


def test_anchor_with_a_different_hash_fails(gallery_fw):
    anchor = gallery_fw.audit.head() | {"hash": "f" * 64}
    report = gallery_fw.audit.verify([anchor])
    # Caught against the record itself or against the automatic anchor of the same record.
    assert not report.ok and report.first_bad_seq == anchor["seq"]
    assert "anchored hash" in report.reason or "disagree" in report.reason


def test_upgrade_from_first_schema_keeps_data_and_never_reuses_ids(
    tmp_path, database_url, pipeline
):
    settings = make_settings(tmp_path / "d", database_url)
    settings.data_dir.mkdir(parents=True)
    engine = db.make_engine(settings.resolved_database_url)
    cfg = db.alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO cases (id, ref, purpose, legal_basis, authorisation, status, "
                "opened_by, opened_at, expires_at) VALUES (1, 'OLD', 'p', 'b', 'a', 'open', "
                "'admin', '2026-01-01', '2099-01-01')"
            )
        )
    engine.dispose()
    fw, _ = Facewarden.init(settings, pipeline=pipeline)  # upgrades to head
    admin = fw.actor(name="admin")
    old = fw.cases.show(admin, "OLD")
    assert old.search_quota == 100 and not old.keep_probe_templates and old.investigators == []
    add_source(fw, admin)
    from conftest import GALLERY

    fw.ingest.run(admin, [GALLERY / "obama.jpg"], "press")
    first = int(fw.index.ids().max())
    fw.gallery.delete_media(admin, [1])
    fw.ingest.run(admin, [GALLERY / "biden.jpg"], "press")
    assert int(fw.index.ids().max()) > first  # the deleted face's id is not handed out again
    fw.engine.dispose()


def test_the_head_revision_constant_is_alembics_head(tmp_path):
    """``db.is_current`` compares with ``HEAD_REVISION`` without loading Alembic: it must be
    the newest migration, and an older schema must not pass for current."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(db.alembic_config("sqlite://")).get_current_head()
    assert head == db.HEAD_REVISION
    engine = db.make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = db.alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0007")
    assert not db.is_current(engine)
    db.upgrade(engine)
    assert db.is_current(engine)
    engine.dispose()
