"""The CLI end to end in subprocesses: JSON contracts, exit codes, clear errors."""

import json
import os
import subprocess
import sys

import pytest

from conftest import (
    PROBES,
    REFERENCE,
    UNKNOWN,
    cli_runner,
    identity_of,
)

pytestmark = pytest.mark.slow  # every test runs the CLI in subprocesses


@pytest.fixture
def cli(tmp_path, database_url):
    return cli_runner(tmp_path / "data", database_url)


def test_search_json_contract(gallery_cli):
    out = json.loads(
        gallery_cli("search", PROBES / "obama_and_biden.jpg", "--case", "C-1", "--json").stdout
    )
    assert set(out) >= {"probe", "faces"}
    found = set()
    for face in out["faces"]:
        assert len(face["box"]) == 4 and isinstance(face["quality"], dict)
        for rank, c in enumerate(face["candidates"], 1):
            assert c["rank"] == rank
            assert set(c) >= {
                "rank",
                "distance",
                "score",
                "face_id",
                "media_id",
                "media_path",
                "source",
                "box",
            }
            assert c["source"] == "press" and c["distance"] <= 0.6
        if face["candidates"]:
            found.add(identity_of(face["candidates"][0]["media_path"]))
    assert {"obama", "biden"} <= found


def test_search_human_output_says_no_candidate(gallery_cli):
    out = gallery_cli("search", UNKNOWN / "Aaron_Sorkin_0001.jpg", "--case", "C-1").stdout
    assert "No candidate within threshold 0.6" in out


def test_search_without_case_exits_with_clear_error(gallery_cli):
    proc = gallery_cli("search", PROBES / "obama1.jpg", ok=False)
    assert proc.returncode == 3
    assert "case reference is required" in proc.stderr and "Traceback" not in proc.stderr


def test_verify_json_contract(gallery_cli):
    same = json.loads(
        gallery_cli(
            "verify", REFERENCE / "obama.jpg", REFERENCE / "obama2.jpg", "--case", "C-1", "--json"
        ).stdout
    )
    diff = json.loads(
        gallery_cli(
            "verify", REFERENCE / "obama.jpg", REFERENCE / "biden.jpg", "--case", "C-1", "--json"
        ).stdout
    )
    assert same["same"] is True and same["distance"] <= 0.6
    assert diff["same"] is False and diff["distance"] > 0.6


def test_stats_json_contract_and_delete(gallery_cli):
    stats = json.loads(gallery_cli("stats", "--json").stdout)
    assert {"sources", "media", "faces", "index_size", "model"} <= set(stats)
    assert (stats["sources"], stats["media"], stats["faces"], stats["index_size"]) == (1, 5, 5, 5)
    gallery_cli("delete", "--media", "1", "--yes")
    after = json.loads(gallery_cli("stats", "--json").stdout)
    assert (after["media"], after["faces"], after["index_size"]) == (4, 4, 4)
    gallery_cli("index", "rebuild")
    gallery_cli("delete", "--source", "press", "--yes")
    assert json.loads(gallery_cli("stats", "--json").stdout)["faces"] == 0


def test_delete_needs_confirmation_without_a_terminal(gallery_cli):
    proc = gallery_cli("delete", "--source", "press", ok=False)
    assert proc.returncode != 0 and "not confirmed" in proc.stderr
    assert json.loads(gallery_cli("stats", "--json").stdout)["faces"] == 5


def test_source_missing_lawful_basis_is_refused(gallery_cli):
    proc = gallery_cli(
        "source",
        "add",
        "scraped",
        "--purpose",
        "x",
        "--jurisdiction",
        "US",
        "--retention",
        "30d",
        ok=False,
    )
    assert proc.returncode == 2 and "lawful basis" in proc.stderr


def test_audit_verify_and_export(gallery_cli, tmp_path):
    gallery_cli("search", PROBES / "obama1.jpg", "--case", "C-1")
    assert "intact" in gallery_cli("audit", "verify").stdout
    lines = gallery_cli("audit", "export", "--case", "C-1", "--format", "jsonl").stdout.splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["action"] for e in events] == ["case.open", "search"]
    csv_out = gallery_cli("audit", "export", "--format", "csv").stdout
    assert csv_out.startswith("seq,ts,actor")


def test_commands_before_init_explain_what_to_do(cli):
    proc = cli("stats", ok=False)
    assert "facewarden init" in proc.stderr and "Traceback" not in proc.stderr


def test_demo_runs_and_finds_both_people(tmp_path):
    env = os.environ | {"COLUMNS": "200", "XDG_CONFIG_HOME": str(tmp_path / "config")}
    env.pop("FACEWARDEN_DATABASE_URL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "facewarden", "--data-dir", tmp_path / "demo", "demo"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "obama.jpg" in proc.stdout and "biden.jpg" in proc.stdout
    assert "audit chain: intact" in proc.stdout


def test_user_token_acting_and_purge_receipt(gallery_cli):
    out = gallery_cli("user", "add", "ina", "--role", "investigator").stdout.strip().splitlines()
    token = out[-1]
    assert len(token) > 30
    # a second user does not break the installing operator: init's stored token acts
    assert json.loads(gallery_cli("stats", "--json").stdout)["faces"] == 5
    gallery_cli("search", PROBES / "obama1.jpg", "--case", "C-1")
    acting = gallery_cli("--as", "admin", "stats", "--json")
    assert json.loads(acting.stdout)["faces"] == 5
    # a bare name is no credential
    forged = gallery_cli("--as", "ina", "stats", ok=False)
    assert forged.returncode == 3 and "[not_your_token]" in forged.stderr
    refused = gallery_cli(
        "--as", "ina", "purge", "--jurisdiction", "FR", "--yes", ok=False, token=token
    )
    assert refused.returncode == 3 and "dpo" in refused.stderr
    receipt = json.loads(
        gallery_cli("--as", "admin", "purge", "--jurisdiction", "FR", "--yes", "--json").stdout
    )
    assert receipt["media"] == 5 and receipt["scope"] == {"jurisdiction": "FR"}


def test_two_person_confirmation_and_export_over_the_cli(gallery_cli):
    rita = gallery_cli("user", "add", "rita", "--role", "reviewer").stdout.strip().splitlines()[-1]
    gallery_cli("case", "assign", "C-1", "rita")
    out = json.loads(
        gallery_cli(
            "--as", "admin", "search", PROBES / "obama1.jpg", "--case", "C-1", "--json"
        ).stdout
    )
    search_id, face = out["search_id"], out["faces"][0]["candidates"][0]["face_id"]
    first = json.loads(gallery_cli("--as", "admin", "confirm", search_id, face, "--json").stdout)
    assert first["status"] == "pending"
    again = gallery_cli("--as", "admin", "confirm", search_id, face, ok=False)
    assert again.returncode == 3 and "[same_person]" in again.stderr
    # the operator holding the shell cannot confirm as rita without rita's token
    forged = gallery_cli("--as", "rita", "confirm", search_id, face, ok=False)
    assert forged.returncode == 3 and "[not_your_token]" in forged.stderr
    refused = gallery_cli("--as", "admin", "case", "export", "C-1", "--face", face + 1, ok=False)
    assert refused.returncode == 3 and "[not_identified]" in refused.stderr
    assert (
        "identified" in gallery_cli("--as", "rita", "confirm", search_id, face, token=rita).stdout
    )
    rows = json.loads(gallery_cli("--as", "admin", "case", "export", "C-1").stdout)
    assert [(r["face_id"], r["confirmed_by"]) for r in rows] == [(face, ["admin", "rita"])]


def test_subject_access_html_and_erasure_over_the_cli(gallery_cli, tmp_path):
    selfie = REFERENCE / "obama.jpg"
    html = tmp_path / "report.html"
    report = json.loads(gallery_cli("subject", "access", selfie, "--html", html, "--json").stdout)
    assert len(report["matches"]) == 1 and "obama.jpg" in html.read_text()
    unconfirmed = gallery_cli("subject", "erase", selfie, ok=False)
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    assert json.loads(gallery_cli("stats", "--json").stdout)["faces"] == 5
    receipt = json.loads(gallery_cli("subject", "erase", selfie, "--yes", "--json").stdout)
    assert receipt["faces"] == 1 and receipt["suppressed"]
    requests = json.loads(gallery_cli("subject", "list", "--json").stdout)
    assert [r["kind"] for r in requests] == ["access", "erasure"]
    assert requests[1]["bytes_purged_at"] is None
    purge = json.loads(gallery_cli("index", "purge", "--json").stdout)
    assert purge["covers_audit_seqs"] == [receipt["audit_seq"]]
    erasure = json.loads(gallery_cli("subject", "list", "--json").stdout)[1]
    assert erasure["bytes_purged_at"] == purge["purged_at"]
    # The purge is a receipt of its own, newest first, naming the erasure it covers.
    listed = json.loads(gallery_cli("subject", "receipts", "--json").stdout)
    assert [r["kind"] for r in listed["receipts"]] == ["purge", "erasure", "access"]
    assert listed["next"] is None
    entry = listed["receipts"][0]
    assert entry["audit_seq"] == purge["audit_seq"] and entry["by"] == "admin"
    assert entry["receipt"]["covers_request_ids"] == [receipt["request_id"]]
    one = json.loads(
        gallery_cli(
            "subject", "receipts", "--limit", "1", "--before-seq", purge["audit_seq"], "--json"
        ).stdout
    )
    assert [r["kind"] for r in one["receipts"]] == ["erasure"]
    assert one["next"] == receipt["audit_seq"]
    text = gallery_cli("subject", "receipts", "--limit", "1").stdout
    assert "purge" in text and entry["audit_hash"][:16] in text
    assert f"older receipts: --before-seq {purge['audit_seq']}" in text
    assert "older receipts" not in gallery_cli("subject", "receipts", "--kind", "purge").stdout
    bad_args = (
        ["--limit", "0"],
        ["--limit", "501"],
        ["--kind", "bogus"],
        ["--before-seq", "0"],
        ["--before-seq", str(2**40)],
    )  # one after the other in one CLI process (conftest.run_batch)
    for bad in gallery_cli.batch(*[("subject", "receipts", *args) for args in bad_args]):
        assert bad.returncode == 2 and "error [invalid_input]" in bad.stderr, (bad.args, bad.stderr)
    token = gallery_cli("user", "add", "ivo", "--role", "investigator").stdout.split()[-1]
    refused = gallery_cli("--as", "ivo", "subject", "receipts", ok=False, token=token)
    assert refused.returncode == 3 and "error [" in refused.stderr


def test_audit_anchor_file_detects_truncation(gallery_cli, tmp_path):
    anchors = tmp_path / "anchors.jsonl"
    gallery_cli("audit", "anchor", "--out", anchors)
    assert "intact" in gallery_cli("audit", "verify", "--anchor", anchors).stdout
    from sqlalchemy import create_engine, text

    anchored = json.loads(anchors.read_text())["seq"]
    url = gallery_cli.env.get("FACEWARDEN_DATABASE_URL") or (
        f"sqlite:///{tmp_path / 'data' / 'facewarden.db'}"
    )
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        # Cut the log back to before the anchored record (verifications are logged too).
        conn.execute(text("DELETE FROM audit_events WHERE seq >= :s"), {"s": anchored})
    engine.dispose()
    assert gallery_cli("audit", "verify").returncode == 0
    broken = gallery_cli("audit", "verify", "--anchor", anchors, ok=False)
    # The anchored record is gone (or, once new records were appended, replaced).
    assert broken.returncode == 1 and "anchored" in broken.stderr


def test_notice_and_production_mode(gallery_cli):
    assert "# Notice" in gallery_cli("notice").stdout
    gallery_cli.env["FACEWARDEN_PRODUCTION"] = "true"
    refused = gallery_cli("stats", ok=False)
    assert refused.returncode == 2 and "FACEWARDEN_CONTROLLER_NAME" in refused.stderr
