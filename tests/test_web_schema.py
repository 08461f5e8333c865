"""Schemathesis against the live OpenAPI spec of a running server: generated requests to
every operation, as the all-roles admin, must never produce a server error (5xx).

Runs the ``st`` command line (its pytest plugin does not load under pytest 9); the JUnit
report is kept beside the test's temporary files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from webserver import running_server

# The fuzzer alone may take up to 15 minutes (its own subprocess timeout) on a slow machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def server(tmp_path_factory, pipeline):
    # A generous rate limit: the fuzzer searches far more than a person would.
    with running_server(
        tmp_path_factory.mktemp("schema"), pipeline, FACEWARDEN_SEARCH_RATE_LIMIT="100000/minute"
    ) as s:
        yield s


def test_no_server_errors_on_generated_requests(server, tmp_path):
    st = Path(sys.executable).with_name("st")
    junit = tmp_path / "schemathesis.xml"
    run = subprocess.run(
        [
            str(st),
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "12",
            "--seed",
            "20261122",
            "--request-timeout",
            "60",
            "--header",
            f"Authorization: Bearer {server.tokens['admin']}",
            "--report",
            "junit",
            "--report-junit-path",
            str(junit),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    report = junit.read_text()
    assert "/api/v1/search" in report and "/api/v1/subjects/erase" in report
    assert "Traceback" not in server.log.read_text()
