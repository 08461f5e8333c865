"""The OpenAPI document is the API's real contract: every operation declares the error
responses it can give, with the one error body the server sends, and the errors a live
server really answers are the ones its operations declare."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from webserver import ROLE_USERS, running_server

pytestmark = pytest.mark.slow  # a real server process over a small ingested gallery

ERROR_REF = "#/components/schemas/ErrorOut"
AS_USER = ("401", "403", "429", "503")
PUBLIC = {"/api/v1/notice", "/healthz", "/metrics"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, pipeline):
    with running_server(
        tmp_path_factory.mktemp("contract"),
        pipeline,
        FACEWARDEN_SEARCH_RATE_LIMIT="2/minute",
        FACEWARDEN_MAX_UPLOAD_BYTES=str(64 * 1024),
    ) as s:
        yield s


@pytest.fixture(scope="module")
def spec(server) -> dict[str, Any]:
    return httpx.get(server.url + "/openapi.json").json()


def error_ref(operation: dict[str, Any], status: str) -> str | None:
    response = operation["responses"].get(status)
    if response is None:
        return None
    return response["content"]["application/json"]["schema"].get("$ref")


def test_every_operation_declares_its_errors_with_the_error_body(spec):
    operations = [
        (path, method, op)
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        if path not in PUBLIC
    ]
    assert len(operations) >= 49
    for path, method, op in operations:
        where = f"{method.upper()} {path}"
        for status in AS_USER:
            assert error_ref(op, status) == ERROR_REF, (where, status)
        if op.get("parameters") or op.get("requestBody"):
            assert error_ref(op, "422") == ERROR_REF, where
        if op.get("requestBody"):
            assert error_ref(op, "413") == ERROR_REF, where
        if "{" in path:
            assert error_ref(op, "404") == ERROR_REF, where
    body = spec["components"]["schemas"]["ErrorOut"]
    detail = spec["components"]["schemas"]["ErrorDetail"]
    assert body["required"] == ["error"] and set(detail["required"]) == {"code", "message"}
    # FastAPI's own validation body is never sent (errors.py answers every 422 itself).
    assert "HTTPValidationError" not in json.dumps(spec)


def operation_of(spec: dict[str, Any], method: str, template: str) -> dict[str, Any]:
    return spec["paths"][template][method.lower()]


def assert_declared(spec, response: httpx.Response, method: str, template: str) -> str:
    """The status is one the operation declares, and the body is the declared error body."""
    op = operation_of(spec, method, template)
    status = str(response.status_code)
    assert status in op["responses"], (method, template, status, response.text)
    assert error_ref(op, status) == ERROR_REF
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert all(isinstance(v, str) and v for v in body["error"].values())
    return body["error"]["code"]


def test_the_errors_a_live_server_answers_are_declared(server, spec):
    anonymous = server.client(None)
    admin = server.client("admin")
    reviewer = server.client(ROLE_USERS["reviewer"])

    r = anonymous.get("/api/v1/me")
    assert r.status_code == 401
    assert assert_declared(spec, r, "GET", "/api/v1/me") == "unauthenticated"

    r = reviewer.get("/api/v1/users")
    assert r.status_code == 403
    assert_declared(spec, r, "GET", "/api/v1/users")

    r = admin.get("/api/v1/cases/NO-SUCH-CASE")
    assert r.status_code == 404
    assert_declared(spec, r, "GET", "/api/v1/cases/{ref}")

    r = admin.get("/api/v1/audit/events", params={"limit": 0})
    assert r.status_code == 422
    assert assert_declared(spec, r, "GET", "/api/v1/audit/events") == "invalid_request"

    big = {
        "name": "big",
        "lawful_basis": "x",
        "purpose": "x",
        "jurisdiction": "DE",
        "retention": "1d",
        "note": "x" * (100 * 1024),
    }
    r = admin.post("/api/v1/sources", json=big)
    assert r.status_code == 413
    assert assert_declared(spec, r, "POST", "/api/v1/sources") == "too_large"

    # Two searches a minute: an empty probe is refused (422) and still counts; the third
    # call is rate limited (429), both as the search operation declares.
    inv = server.client("ines")
    empty = {"image": ("empty.jpg", b"", "image/jpeg")}
    for _ in range(2):
        r = inv.post("/api/v1/search", files=empty, data={"case": "CASE-1"})
        assert r.status_code == 422
        assert_declared(spec, r, "POST", "/api/v1/search")
    r = inv.post("/api/v1/search", files=empty, data={"case": "CASE-1"})
    assert r.status_code == 429 and r.headers["Retry-After"]
    assert assert_declared(spec, r, "POST", "/api/v1/search") == "rate_limited"
