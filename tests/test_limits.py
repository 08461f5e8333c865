"""Bounded durations, dates, text and numbers: every interface refuses an out-of-range value
with a clear error (a 4xx, or ``error [code]`` from the CLI), never an overflow or a 500."""

from __future__ import annotations

import os
import subprocess
from datetime import datetime

import httpx
import pytest
from sqlalchemy import update
from webserver import facewarden_command, running_server

from facewarden.adapters.storage.db import transaction
from facewarden.adapters.storage.tables import Source
from facewarden.core.durations import MAX_DURATION_DAYS, parse_duration
from facewarden.core.errors import InvalidInput

from conftest import GALLERY, add_source, open_case

TOO_LONG = ["9999y", "1000000w", "3000000d", "99999999999999999999d", "101y", "876001h"]
MALFORMED = ["", "  ", "12m", "1.5d", "-3d", "0d", "d", "365", "1e9d", "٣d"]


@pytest.mark.parametrize("text", TOO_LONG + MALFORMED)
def test_parse_duration_refuses_out_of_range_and_malformed(text):
    with pytest.raises(InvalidInput) as err:
        parse_duration(text)
    assert err.value.code == "bad_duration"


def test_the_limit_itself_is_accepted():
    assert parse_duration("100y").days == MAX_DURATION_DAYS
    assert parse_duration(f"{MAX_DURATION_DAYS}d").days == MAX_DURATION_DAYS


@pytest.mark.parametrize("retention", TOO_LONG)
def test_source_retention_is_bounded(fw, admin, retention):
    with pytest.raises(InvalidInput) as err:
        add_source(fw, admin, retention=retention)
    assert err.value.code == "bad_duration"
    assert fw.sources.list() == []


@pytest.mark.parametrize("expires", ["9999y", "99999999999999999999d", "3000000d"])
def test_case_expiry_is_bounded(fw, admin, expires):
    with pytest.raises(InvalidInput) as err:
        open_case(fw, admin, expires=expires)
    assert err.value.code == "bad_duration"
    assert fw.cases.list(admin) == []


def test_ingest_into_a_source_with_an_oversized_stored_retention_still_works(fw, admin):
    """A retention written before the limit existed (or straight into the database by an
    insider) is capped at the limit when media expire, not an OverflowError per image."""
    add_source(fw, admin, retention="100y")
    with transaction(fw.writes) as session:
        session.execute(update(Source).values(retention_days=1e12))
    summary = fw.ingest.run(admin, [GALLERY / "obama.jpg"], "press")
    assert summary.faces == 1 and not summary.skipped, summary


@pytest.mark.parametrize("since", [datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59)])
def test_audit_since_is_bounded(fw, admin, since):
    with pytest.raises(InvalidInput) as err:
        fw.oversight.events(admin, since=since)
    assert err.value.code == "bad_date"


def test_text_lengths_are_bounded_in_the_core(fw, admin):
    with pytest.raises(InvalidInput) as err:
        add_source(fw, admin, purpose="x" * 10_001)
    assert err.value.code == "too_long"
    with pytest.raises(InvalidInput):
        add_source(fw, admin, name="n" * 101)
    with pytest.raises(InvalidInput):
        open_case(fw, admin, ref="r" * 101)
    with pytest.raises(InvalidInput):
        open_case(fw, admin, quota=2**31)
    with pytest.raises(InvalidInput):
        fw.users.add(admin, "u" * 101, ["investigator"])
    assert fw.sources.list() == [] and fw.cases.list(admin) == []


# -- the same values over HTTP and the CLI -------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory, pipeline):
    with running_server(tmp_path_factory.mktemp("limits"), pipeline) as s:
        yield s


SOURCE = {
    "name": "s2",
    "lawful_basis": "b",
    "purpose": "p",
    "jurisdiction": "DE",
    "retention": "365d",
}
CASE = {"ref": "C-9", "purpose": "p", "legal_basis": "b", "authorisation": "a"}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/sources", SOURCE | {"retention": "9999y"}),
        ("POST", "/api/v1/sources", SOURCE | {"retention": "1000000w"}),
        ("POST", "/api/v1/sources", SOURCE | {"retention": "3000000d"}),
        ("POST", "/api/v1/sources", SOURCE | {"retention": "99999999999999999999d"}),
        ("POST", "/api/v1/sources", SOURCE | {"purpose": "p" * 20_000}),
        ("POST", "/api/v1/sources", SOURCE | {"note": "n" * 20_000}),
        ("POST", "/api/v1/cases", CASE | {"expires": "9999y"}),
        ("POST", "/api/v1/cases", CASE | {"expires": "99999999999999999999d"}),
        ("POST", "/api/v1/cases", CASE | {"authorisation": "a" * 20_000}),
        ("GET", "/api/v1/audit/events?since=0001-01-01T00:00:00", None),
        ("GET", "/api/v1/audit/events?since=9999-12-31T23:59:59", None),
        ("GET", "/api/v1/audit/export?since=0001-01-01T00:00:00", None),
    ],
)
def test_api_answers_422_and_keeps_the_connection(server, method, path, body):
    client = server.client()
    r = client.request(method, path, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] in {"bad_duration", "bad_date", "too_long", "invalid_request"}
    # The keep-alive connection survives: the next request on it is answered.
    assert client.get("/api/v1/me").status_code == 200


@pytest.mark.parametrize(
    "args",
    [
        ["source", "add", "s3", "--lawful-basis", "b", "--purpose", "p", "--jurisdiction", "DE",
         "--retention", "9999y"],
        ["case", "open", "C-8", "--purpose", "p", "--legal-basis", "b", "--authorisation", "a",
         "--expires", "99999999999999999999d"],
        ["audit", "export", "--since", "0001-01-01T00:00:00"],
    ],
)  # fmt: skip
def test_cli_prints_a_clear_error(fw, settings, args):
    token = fw.users.rotate(fw.actor(name="admin"))  # the CLI acts by a credential
    env = os.environ | {"FACEWARDEN_DATA_DIR": str(settings.data_dir), "FACEWARDEN_TOKEN": token}
    if settings.database_url:
        env["FACEWARDEN_DATABASE_URL"] = settings.database_url
    run = subprocess.run(
        [*facewarden_command(), "--as", "admin", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert "error [bad_" in run.stderr, run.stderr


def test_server_log_has_no_traceback(server):
    httpx.get(server.url + "/healthz")
    assert "Traceback" not in server.log.read_text()
