"""Authorisation matrix: every API endpoint, called by a user of each single role and by no
one. Roles not listed are refused with 403 ``permission_denied`` (by the core, which logs
it); listed roles get past authorisation (the request may still fail for other reasons,
e.g. a made-up id gives 404). A test also checks that no endpoint is missing here."""

from __future__ import annotations

import pytest
from webserver import ROLE_USERS, running_server

from facewarden.core.actors import ROLES

from conftest import GALLERY

pytestmark = pytest.mark.slow

ALL = ROLES
CASE_READERS = ("investigator", "reviewer", "dpo", "auditor", "admin")
AUDIT = ("auditor", "admin", "dpo")
CASE_RECORDS = ("investigator", "reviewer", "dpo", "auditor")
"""Roles that may read a case's records (investigators and reviewers: of their own open
cases; tests/test_web_access.py has the case-membership matrix)."""
JUNK = ("x.jpg", b"not an image", "image/jpeg")


def body_for(role: str) -> dict:
    return {
        "source": {
            "name": f"src-{role}",
            "lawful_basis": "b",
            "purpose": "p",
            "jurisdiction": "DE",
            "retention": "30d",
        },
        "case": {"ref": f"M-{role}", "purpose": "p", "legal_basis": "b", "authorisation": "a"},
        "user": {"name": f"new-{role}", "roles": ["auditor"]},
    }


# (method, path, request arguments (role -> kwargs), roles allowed; None means public)
MATRIX = [
    ("GET", "/api/v1/me", {}, ALL),
    ("GET", "/api/v1/stats", {}, ALL),
    ("GET", "/api/v1/sources", {}, ALL),
    ("POST", "/api/v1/sources", lambda r: {"json": body_for(r)["source"]}, ("operator", "admin")),
    ("DELETE", "/api/v1/sources/{name}", {}, ("operator", "dpo")),
    (
        "POST",
        "/api/v1/ingest",
        {"data": {"source": "no-such-source"}, "files": {"files": JUNK}},
        ("operator",),
    ),
    ("GET", "/api/v1/jobs", {}, ("operator", "admin")),
    ("GET", "/api/v1/jobs/{job_id}", {}, ("operator", "admin")),
    ("POST", "/api/v1/jobs/{job_id}/cancel", {}, ("operator", "admin")),
    (
        "POST",
        "/api/v1/search",
        {"data": {"case": "CASE-1"}, "files": {"image": JUNK}},
        ("investigator",),
    ),
    (
        "POST",
        "/api/v1/search/video",
        {"data": {"case": "CASE-1"}, "files": {"video": ("x.mp4", b"not a video", "video/mp4")}},
        ("investigator",),
    ),
    ("POST", "/api/v1/verify", {"files": {"a": JUNK, "b": JUNK}}, ("investigator",)),
    (
        "GET",
        "/api/v1/searches/{search_id}/faces/{face_id}/crop",
        {},
        ("investigator", "reviewer", "dpo", "auditor"),
    ),
    ("GET", "/api/v1/faces/{face_id}/crop", {}, ("dpo",)),
    ("GET", "/api/v1/cases", {}, CASE_READERS),
    ("POST", "/api/v1/cases", lambda r: {"json": body_for(r)["case"]}, ("investigator", "admin")),
    ("GET", "/api/v1/cases/{ref}", {}, CASE_READERS),
    ("POST", "/api/v1/cases/{ref}/close", {}, ("investigator", "admin")),
    ("POST", "/api/v1/cases/{ref}/members", {"json": {"user": "nobody"}}, ("admin",)),
    ("GET", "/api/v1/cases/{ref}/searches", {}, CASE_RECORDS),
    ("GET", "/api/v1/cases/{ref}/candidates", {}, CASE_RECORDS),
    ("GET", "/api/v1/cases/{ref}/export", {}, CASE_RECORDS),
    ("GET", "/api/v1/cases/{ref}/review", {}, CASE_RECORDS),
    ("GET", "/api/v1/searches/{search_id}/probe-faces/{face_index}/crop", {}, CASE_RECORDS),
    ("GET", "/api/v1/searches/{search_id}/faces/{face_id}/source", {}, CASE_RECORDS),
    (
        "POST",
        "/api/v1/confirmations",
        {"json": {"search_id": 999999, "face_id": 1, "decision": "confirm"}},
        ("investigator", "reviewer"),
    ),
    ("POST", "/api/v1/subjects/access", {"files": {"selfie": JUNK}}, ("dpo",)),
    ("POST", "/api/v1/subjects/erase/preview", {"files": {"selfie": JUNK}}, ("dpo",)),
    (
        "POST",
        "/api/v1/subjects/erase",
        {"files": {"selfie": JUNK}, "data": {"confirm": "true"}},
        ("dpo",),
    ),
    (
        "POST",
        "/api/v1/subjects/erasures/{request_id}/review",
        {"json": {"release": [1]}},
        ("dpo",),
    ),
    ("GET", "/api/v1/subjects/requests", {}, ("dpo", "auditor", "admin")),
    ("GET", "/api/v1/subjects/receipts", {}, ("dpo", "auditor")),
    ("POST", "/api/v1/subjects/by-reference/access", {"json": {"subject": "R-404"}}, ("dpo",)),
    (
        "POST",
        "/api/v1/subjects/by-reference/erase",
        {"json": {"subject": "R-404", "confirm": True}},
        ("dpo",),
    ),
    ("POST", "/api/v1/subjects/by-reference/restrict", {"json": {"subject": "R-404"}}, ("dpo",)),
    ("POST", "/api/v1/purge", {"json": {"jurisdiction": "ZZ"}}, ("dpo",)),
    ("POST", "/api/v1/retention/run", {}, ("dpo", "admin")),
    ("POST", "/api/v1/media/{media_id}/restrict", {"json": {"restricted": True}}, ("dpo",)),
    ("DELETE", "/api/v1/media/{media_id}", {}, ("operator", "dpo")),
    ("POST", "/api/v1/index/rebuild", {}, ("operator", "admin")),
    ("GET", "/api/v1/audit/events", {}, AUDIT),
    ("GET", "/api/v1/audit/export", {}, AUDIT),
    ("POST", "/api/v1/audit/verify", {"json": {}}, AUDIT),
    ("GET", "/api/v1/audit/head", {}, AUDIT),
    ("GET", "/api/v1/report", {}, ("dpo", "auditor", "admin")),
    ("GET", "/api/v1/users", {}, ("admin", "auditor")),
    ("POST", "/api/v1/users", lambda r: {"json": body_for(r)["user"]}, ("admin",)),
    ("POST", "/api/v1/users/{name}/disable", {}, ("admin",)),
    ("POST", "/api/v1/users/{name}/enable", {}, ("admin",)),
    ("POST", "/api/v1/users/{name}/token", {}, ("admin",)),
    ("GET", "/api/v1/notice", {}, None),
    ("GET", "/healthz", {}, None),
    ("GET", "/metrics", {}, None),
]

PATH_VALUES = {
    "job_id": "no-such-job",
    "request_id": "999999",
    "face_index": "0",
    "search_id": "999999",
    "face_id": "1",
    "ref": "CASE-1",
    "media_id": "999999",
    "name": "no-such-source",
}
# Closing a real case would end the other tests' searches: close one that does not exist.
CLOSE_REF = "NO-SUCH-CASE"


@pytest.fixture(scope="module")
def server(tmp_path_factory, pipeline):
    with running_server(tmp_path_factory.mktemp("roles"), pipeline) as s:
        yield s


def concrete(path: str) -> str:
    if path.endswith("/close"):
        return path.replace("{ref}", CLOSE_REF)
    for key, value in PATH_VALUES.items():
        path = path.replace("{" + key + "}", value)
    return path


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "allowed"), MATRIX, ids=[f"{m} {p}" for m, p, *_ in MATRIX]
)
def test_role_matrix(server, method, path, kwargs, allowed):
    outcomes = {}
    for role in (*ROLES, None):
        client = server.client(ROLE_USERS[role] if role else None)
        args = kwargs(role or "anon") if callable(kwargs) else kwargs
        r = client.request(method, concrete(path), **args)
        is_json = r.headers.get("content-type", "").startswith("application/json")
        body = r.json() if is_json else None
        code = body.get("error", {}).get("code") if isinstance(body, dict) else None
        outcomes[role] = (r.status_code, code)
        assert r.status_code < 500, (role, r.status_code, r.text)
    for role, (status, code) in outcomes.items():
        if allowed is None:
            assert status == 200, (role, status, code)
        elif role is None:
            assert (status, code) == (401, "unauthenticated"), (status, code)
        elif role in allowed:
            assert status not in (401, 403) or code not in (
                "permission_denied",
                "unauthenticated",
            ), (role, status, code)
        else:
            assert (status, code) == (403, "permission_denied"), (role, status, code)


def test_matrix_covers_every_endpoint(server):
    spec = server.client(None).get("/openapi.json").json()
    served = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    covered = {(m, p) for m, p, *_ in MATRIX}
    assert served - covered == set(), "endpoints without an authorisation test"


def test_refusals_are_audited(server):
    before = server.client("only-auditor").get("/api/v1/audit/head").json()["seq"]
    r = server.client("only-reviewer").post("/api/v1/purge", json={"jurisdiction": "DE"})
    assert r.status_code == 403
    events = (
        server.client("only-auditor")
        .get("/api/v1/audit/events", params={"action": "purge", "outcome": "refused"})
        .json()
    )
    assert events[0]["seq"] > before and events[0]["actor"] == ROLE_USERS["reviewer"]
    # and nothing was purged
    assert server.client("admin").get("/api/v1/stats").json()["faces"] >= len(
        list(GALLERY.iterdir())
    )
