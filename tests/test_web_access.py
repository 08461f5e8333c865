"""Case membership and the credential lifecycle over real HTTP (a ``facewarden serve``):

- a role x case-membership (assigned, not assigned, closed case) x endpoint matrix, whose
  case-scoped endpoints are taken from the live OpenAPI so none is missed;
- a console cookie used after log-out, a rotated token, a disabled user;
- failed log-ins limited (429 with Retry-After) and summarised in the audit log.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest
from sqlalchemy import select
from webserver import ROLE_USERS, running_server

from facewarden.adapters.storage.tables import AuditEvent
from facewarden.services.app import Facewarden

from conftest import PROBES, REFERENCE, make_settings

pytestmark = pytest.mark.slow

JUNK = ("x.jpg", b"not an image", "image/jpeg")
MATRIX_USERS = {
    "inv-in": "investigator",
    "inv-out": "investigator",
    "rev-in": "reviewer",
    "rev-out": "reviewer",
}
"""``*-in`` are assigned to the matrix cases, ``*-out`` to none."""
OTHERS = [ROLE_USERS[r] for r in ("admin", "operator", "dpo", "auditor")]
BODY_CASE = {
    ("POST", "/api/v1/search"),
    ("POST", "/api/v1/search/video"),
    ("POST", "/api/v1/verify"),
    ("POST", "/api/v1/confirmations"),
}
"""Case-scoped endpoints that name the case in the body (the others have it in the path)."""


def upload(path, field="image"):
    return {field: (path.name, path.read_bytes(), "image/jpeg")}


def error_of(r: httpx.Response) -> str | None:
    try:
        return r.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


@pytest.fixture(scope="module")
def server(tmp_path_factory, pipeline):
    with running_server(tmp_path_factory.mktemp("access"), pipeline) as s:
        admin = s.client("admin")
        for name, role in MATRIX_USERS.items():
            r = admin.post("/api/v1/users", json={"name": name, "roles": [role]})
            s.tokens[name] = r.json()["token"]
        s.contexts = {}
        for ref in ("M-OPEN", "M-CLOSED"):
            open_case(admin, ref)
            found = s.client("inv-in").post(
                "/api/v1/search", files=upload(PROBES / "obama1.jpg"), data={"case": ref}
            )
            assert found.status_code == 200, found.text
            result = found.json()
            s.contexts[ref] = (result["search_id"], result["faces"][0]["candidates"][0]["face_id"])
        assert s.client("inv-in").post("/api/v1/cases/M-CLOSED/close").status_code == 200
        yield s


def open_case(admin: httpx.Client, ref: str) -> None:
    r = admin.post(
        "/api/v1/cases",
        json={
            "ref": ref,
            "purpose": "p",
            "legal_basis": "b",
            "authorisation": "a",
            "investigators": ["inv-in", "rev-in"],
        },
    )
    assert r.status_code == 201, r.text


def expected(method: str, path: str, user: str, closed: bool) -> bool:
    """Whether ``user`` gets past the rules for a case (open or closed) they are, or are
    not, assigned to."""
    member = user.endswith("-in")
    oversight = user in (ROLE_USERS["dpo"], ROLE_USERS["auditor"])
    reads = (member and not closed) or oversight
    if path.endswith(("/searches", "/candidates", "/export", "/crop", "/review", "/source")):
        return reads
    if (method, path) == ("GET", "/api/v1/cases/{ref}"):
        return member or oversight or user == ROLE_USERS["admin"]
    if path.endswith("/close"):
        return user in ("inv-in", ROLE_USERS["admin"])
    if path.endswith("/members"):
        return user == ROLE_USERS["admin"]  # the cases' opener is 'admin', not in the matrix
    if path.endswith(("/search", "/video", "/verify")):
        return user == "inv-in" and not closed
    if path.endswith("/confirmations"):
        return member and not closed
    raise AssertionError(f"no expectation for {method} {path}")


def case_scoped(server) -> set[tuple[str, str]]:
    spec = server.client(None).get("/openapi.json").json()
    ops = {(m.upper(), p) for p, items in spec["paths"].items() for m in items}
    return {(m, p) for m, p in ops if "{ref}" in p or "{search_id}" in p} | (ops & BODY_CASE)


def call(server, client, method, path, ref, fresh_ref):
    search_id, face_id = server.contexts[ref]
    target = fresh_ref if path.endswith("/close") and ref == "M-OPEN" else ref
    url = (
        path.replace("{ref}", target)
        .replace("{search_id}", str(search_id))
        .replace("{face_id}", str(face_id))
        .replace("{face_index}", "0")
    )
    kwargs: dict = {}
    if path.endswith("/search") or path.endswith("/verify"):
        files = {"image": JUNK} if path.endswith("/search") else {"a": JUNK, "b": JUNK}
        kwargs = {"files": files, "data": {"case": ref}}
    elif path.endswith("/video"):
        kwargs = {"files": {"video": ("x.mp4", b"junk", "video/mp4")}, "data": {"case": ref}}
    elif path.endswith("/confirmations"):
        kwargs = {"json": {"search_id": search_id, "face_id": 999_999, "decision": "reject"}}
    elif path.endswith("/members"):
        kwargs = {"json": {"user": "nobody"}}
    return client.request(method, url, **kwargs)


def test_role_by_case_membership_matrix(server):
    endpoints = sorted(case_scoped(server))
    assert len(endpoints) >= 11  # sanity: the live schema was read
    admin = server.client("admin")
    failures = []
    n = 0
    for method, path in endpoints:
        for user in [*MATRIX_USERS, *OTHERS]:
            client = server.client(user)
            for ref in ("M-OPEN", "M-CLOSED"):
                fresh = f"F-{n}"
                n += 1
                if path.endswith("/close") and ref == "M-OPEN":
                    open_case(admin, fresh)
                r = call(server, client, method, path, ref, fresh)
                allowed = expected(method, path, user, ref == "M-CLOSED")
                got = r.status_code not in (401, 403)
                if r.status_code >= 500 or got != allowed:
                    failures.append((method, path, user, ref, r.status_code, error_of(r)))
    assert failures == []


def test_case_lists_show_only_ones_own_cases(server):
    listed = {c["ref"] for c in server.client("inv-out").get("/api/v1/cases").json()}
    assert not listed & {"M-OPEN", "M-CLOSED", "CASE-1"}
    mine = {c["ref"] for c in server.client("rev-in").get("/api/v1/cases").json()}
    assert {"M-OPEN", "M-CLOSED"} <= mine and "CASE-1" not in mine


def test_verify_without_with_a_foreign_and_with_an_unknown_case(server):
    inv = server.client("inv-in")
    pair = {
        "a": ("a.jpg", (REFERENCE / "obama.jpg").read_bytes(), "image/jpeg"),
        "b": ("b.jpg", (REFERENCE / "obama2.jpg").read_bytes(), "image/jpeg"),
    }
    refusals = [
        ({}, "case_required"),
        ({"case": "CASE-1"}, "not_assigned"),
        ({"case": "NOPE"}, "case_required"),
        ({"case": "M-CLOSED"}, "case_closed"),
    ]
    for data, code in refusals:
        r = inv.post("/api/v1/verify", files=pair, data=data)
        assert (r.status_code, error_of(r)) == (403, code), (data, r.text)
    ok = inv.post("/api/v1/verify", files=pair, data={"case": "M-OPEN"})
    assert ok.status_code == 200 and ok.json()["same"] is True
    auditor = server.client(ROLE_USERS["auditor"])
    for ref in ("NOPE", "CASE-1", "M-CLOSED"):
        events = auditor.get("/api/v1/audit/events", params={"action": "verify", "case": ref})
        outcomes = {e["outcome"] for e in events.json()}
        assert outcomes == {"refused"}, ref  # never an 'ok' record under it
    events = auditor.get("/api/v1/audit/events", params={"action": "verify", "case": "M-OPEN"})
    ok = [e["actor"] for e in events.json() if e["outcome"] == "ok"]
    assert ok == ["inv-in"]


# -- console sessions and tokens ------------------------------------------------------------
def console_login(server, user: str, name: str | None = None) -> httpx.Client:
    c = server.client(None, follow_redirects=False)
    form = c.get("/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
    data = {"token": server.tokens[user], "csrf": csrf} | ({"user": name} if name else {})
    r = c.post("/login", data=data)
    assert r.status_code == 303, r.text
    return c


def session_csrf(c: httpx.Client) -> str:
    page = c.get("/account").text
    return re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)


def test_cookie_captured_before_logout_is_dead_after_it(server):
    c = console_login(server, "rev-in", name="rev-in")
    assert c.get("/api/v1/me").json()["name"] == "rev-in"
    stolen = dict(c.cookies)
    assert c.post("/logout", data={"csrf": session_csrf(c)}).status_code == 303
    replay = server.client(None, cookies=stolen)
    r = replay.get("/api/v1/me")
    assert r.status_code == 401 and error_of(r) == "unauthenticated"
    assert server.client("rev-in").get("/api/v1/me").status_code == 200  # the token lives


def test_rotated_token_and_disabled_user(server):
    admin = server.client(ROLE_USERS["admin"])
    r = admin.post("/api/v1/users", json={"name": "temp", "roles": ["investigator"]})
    server.tokens["temp"] = old = r.json()["token"]
    console = console_login(server, "temp")
    assert console.get("/api/v1/me").status_code == 200
    # every user may rotate their own token; the old one and the console session end
    rotated = server.client("temp").post("/api/v1/users/temp/token")
    assert rotated.status_code == 200
    new = rotated.json()["token"]
    assert new != old
    r = server.client("temp").get("/api/v1/me")
    assert r.status_code == 401 and error_of(r) == "unauthenticated"
    assert console.get("/api/v1/me").status_code == 401
    server.tokens["temp"] = new
    assert server.client("temp").get("/api/v1/me").status_code == 200
    # someone else's token: admins only
    other = server.client("inv-out").post("/api/v1/users/temp/token")
    assert (other.status_code, error_of(other)) == (403, "permission_denied")
    console = console_login(server, "temp")
    assert admin.post("/api/v1/users/temp/disable").json()["sessions_ended"] == 1
    for client in (server.client("temp"), console):
        r = client.get("/api/v1/me")
        assert r.status_code == 401, r.text
    assert error_of(server.client("temp").get("/api/v1/me")) == "user_disabled"
    users = {u["name"]: u for u in admin.get("/api/v1/users").json()}
    assert users["temp"]["active"] is False and users["temp"]["last_used_at"]
    assert admin.post("/api/v1/users/temp/enable").status_code == 200
    assert server.client("temp").get("/api/v1/me").status_code == 200


def test_the_admin_console_has_a_users_page(server):
    c = console_login(server, "admin")
    page = c.get("/users")
    assert page.status_code == 200 and 'id="users-table"' in page.text
    assert "/users" in c.get("/account").text  # in the admin's menu


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, pipeline):
    """A server of its own: the failures below lock out 127.0.0.1 for a minute."""
    with running_server(
        tmp_path_factory.mktemp("guard"), pipeline, FACEWARDEN_AUTH_FAILURE_LIMIT="10/minute"
    ) as s:
        yield s


def test_failed_logins_are_limited_and_summarised(guarded):
    before = guarded.client(ROLE_USERS["auditor"]).get("/api/v1/audit/head").json()["seq"]
    c = guarded.client(None, follow_redirects=False)
    statuses = []
    for n in range(100):
        form = c.get("/login").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
        r = c.post("/login", data={"token": f"guess-{n}", "csrf": csrf, "user": "admin"})
        statuses.append(r.status_code)
    assert statuses[:10] == [401] * 10 and set(statuses[10:]) == {429}
    assert int(r.headers["retry-after"]) >= 1
    # even the right token is refused from this client while it is limited
    form = c.get("/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
    r = c.post("/login", data={"token": guarded.tokens["admin"], "csrf": csrf})
    assert r.status_code == 429
    bearer = guarded.client(None, headers={"Authorization": "Bearer wrong"}).get("/api/v1/me")
    assert bearer.status_code == 429 and error_of(bearer) == "rate_limited"
    assert int(bearer.headers["retry-after"]) >= 1
    # every client of this address is limited, the auditor too: read the log in process
    assert guarded.client(ROLE_USERS["auditor"]).get("/api/v1/me").status_code == 429
    fw = Facewarden(make_settings(guarded.data_dir, guarded.database_url))
    try:
        with fw.sessions() as s:
            rows = s.scalars(
                select(AuditEvent)
                .where(AuditEvent.action == "auth.failed", AuditEvent.seq > before)
                .order_by(AuditEvent.seq)
            ).all()
    finally:
        fw.close()
    # summarised: a few records, not one per attempt, counting every attempt
    assert 2 <= len(rows) <= 3
    counted = [json.loads(r.details)["failures"] for r in rows]
    assert counted[0] == 1 and counted[1] == 10  # the first; then up to the limit
    assert json.loads(rows[1].details)["last"] == "rate_limited"
    assert all(r.outcome == "refused" and r.actor == "anonymous" for r in rows)
