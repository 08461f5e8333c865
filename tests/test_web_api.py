"""The HTTP API over a real server process: search, jobs, two-person rule, erasure, errors,
limits, sessions with CSRF, headers, metrics."""

from __future__ import annotations

import base64
import io
import json
import re
import time
import zipfile

import pytest
from webserver import running_server

from conftest import GALLERY, PROBES, REFERENCE, UNKNOWN, identity_of

pytestmark = pytest.mark.slow
CLIP = GALLERY.parent.parent / "video" / "short_hamilton_clip.mp4"


@pytest.fixture(scope="module")
def server(tmp_path_factory, pipeline):
    with running_server(
        tmp_path_factory.mktemp("api"),
        pipeline,
        FACEWARDEN_SEARCH_RATE_LIMIT="12/minute",
        FACEWARDEN_MAX_UPLOAD_BYTES=str(3 * 1024 * 1024),
    ) as s:
        yield s


def upload(path, field="image"):
    return {field: (path.name, path.read_bytes(), "image/jpeg")}


def error_of(response):
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]["code"]


def search(client, probe_path, case="CASE-1"):
    return client.post("/api/v1/search", files=upload(probe_path), data={"case": case})


def test_search_returns_the_right_candidate_with_crop_and_provenance(server):
    inv = server.client("ines")
    r = search(inv, PROBES / "obama1.jpg")
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["case"] == "CASE-1" and result["search_id"] and result["audit_seq"]
    top = result["faces"][0]["candidates"][0]
    assert identity_of(top["media_path"]) == "obama" and top["rank"] == 1
    assert top["distance"] < 0.6 and 0.5 < top["score"] <= 1
    assert top["source"] == "press" and top["jurisdiction"] == "DE" and top["ingested_at"]
    crop = inv.get(top["crop_url"])
    assert crop.status_code == 200 and crop.headers["content-type"] == "image/jpeg"
    assert crop.content[:2] == b"\xff\xd8"
    # The crop of a face this search did not return is not served.
    other = inv.get(f"/api/v1/searches/{result['search_id']}/faces/{top['face_id'] + 1000}/crop")
    assert other.status_code == 404 and error_of(other) == "not_found"


def test_video_search_returns_tracks_timeline_and_thumbnails(server):
    inv = server.client("ines")
    data = CLIP.read_bytes()
    r = inv.post(
        "/api/v1/search/video",
        files={"video": ("clip.mp4", data, "video/mp4")},
        data={"case": "CASE-1", "fps": "2"},
    )
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["video"]["frames_sampled"] == 19 and result["partial"] is False
    assert result["tracks"] and len(result["tracks"]) < result["video"]["detections"]
    for track in result["tracks"]:
        assert track["end_s"] >= track["start_s"] and len(track["box"]) == 4
        assert base64.b64decode(track["thumbnail_jpeg"])[:2] == b"\xff\xd8"
        for c in track["candidates"]:
            assert inv.get(c["crop_url"]).status_code == 200
    assert set(result["unmatched_tracks"]) <= {t["track_id"] for t in result["tracks"]}
    # No probe video stays on the server.
    assert not list((server.data_dir / "uploads").glob("probe-*"))
    cut = inv.post(
        "/api/v1/search/video",
        files={"video": ("cut.mp4", data[: len(data) * 6 // 10], "video/mp4")},
        data={"case": "CASE-1", "fps": "1"},
    )
    assert cut.status_code == 200 and cut.json()["partial"] is True
    assert "truncated" in cut.json()["partial_reason"]
    junk = inv.post(
        "/api/v1/search/video",
        files={"video": ("x.mp4", b"not a video at all", "video/mp4")},
        data={"case": "CASE-1"},
    )
    assert junk.status_code == 422 and error_of(junk) == "not_a_video"


def test_unknown_face_has_no_candidate_within_threshold(server):
    r = search(server.client("ines"), next(UNKNOWN.iterdir()))
    assert r.status_code == 200
    faces = r.json()["faces"]
    assert faces and all(f["no_candidate_within_threshold"] for f in faces)


def test_errors_are_json_with_stable_codes(server):
    inv = server.client("ines")
    assert error_of(search(inv, PROBES / "obama1.jpg", case="NOPE")) == "case_required"
    bad = inv.post(
        "/api/v1/search",
        files={"image": ("x.jpg", b"not an image", "image/jpeg")},
        data={"case": "CASE-1"},
    )
    assert bad.status_code == 422 and error_of(bad) == "not_an_image"
    missing = inv.post("/api/v1/search", data={"case": "CASE-1"})
    assert missing.status_code == 422 and error_of(missing) == "invalid_request"
    anonymous = server.client(None).get("/api/v1/cases")
    assert anonymous.status_code == 401 and error_of(anonymous) == "unauthenticated"
    assert anonymous.headers["www-authenticate"] == "Bearer"
    forged = server.client(None, headers={"Authorization": "Bearer nope"}).get("/api/v1/me")
    assert forged.status_code == 401
    nowhere = inv.get("/api/v1/nowhere")
    assert nowhere.status_code == 404 and error_of(nowhere) == "not_found"
    assert "Traceback" not in bad.text + missing.text


def test_upload_over_the_limit_is_refused_with_413(server):
    big = {"image": ("big.jpg", b"\xff" * (4 * 1024 * 1024), "image/jpeg")}
    r = server.client("ines").post("/api/v1/search", files=big, data={"case": "CASE-1"})
    assert r.status_code == 413 and error_of(r) == "too_large"


def test_search_rate_limit_per_user(server):
    limited = server.client("only-investigator")
    codes = [
        limited.post("/api/v1/verify", files={"a": ("a", b"x"), "b": ("b", b"y")}).status_code
        for _ in range(13)
    ]
    assert codes[:12] == [403] * 12 and codes[12] == 429  # no case: refused by the core
    r = limited.post("/api/v1/verify", files={"a": ("a", b"x"), "b": ("b", b"y")})
    assert error_of(r) == "rate_limited" and int(r.headers["retry-after"]) >= 1
    # Other users are not affected.
    assert server.client("ines").get("/api/v1/me").status_code == 200


def test_ingest_job_reports_progress_summary_and_skips(server, tmp_path):
    op = server.client("only-operator")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("../../escape.jpg", (REFERENCE / "obama2.jpg").read_bytes())
        z.writestr("ok/biden_ref.jpg", (REFERENCE / "biden.jpg").read_bytes())
        z.writestr("notes.txt", b"hello")
    files = [
        ("files", ("kit.jpg", (PROBES / "johnsnow_test1.jpg").read_bytes(), "image/jpeg")),
        ("files", ("broken.jpg", b"\xff\xd8\xff\xe0 truncated", "image/jpeg")),
        ("files", ("../../../etc/passwd.jpg", (GALLERY / "obama.jpg").read_bytes(), "image/jpeg")),
        ("files", ("bundle.zip", archive.getvalue(), "application/zip")),
    ]
    r = op.post("/api/v1/ingest", data={"source": "press"}, files=files)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] in ("queued", "running") and "passwd.jpg" in job["files"]
    deadline = time.monotonic() + 120
    while job["state"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.3)
        job = op.get(f"/api/v1/jobs/{job['job_id']}").json()
    assert job["state"] == "done", job
    summary = job["summary"]
    assert summary["images"] == 2 and summary["faces"] == 2
    assert summary["duplicates"] == 1  # passwd.jpg is the gallery's obama.jpg
    reasons = {s["path"].rsplit("/", 1)[-1]: s["code"] for s in summary["skipped"]}
    assert reasons["broken.jpg"] in ("truncated", "corrupt", "not_an_image")
    assert reasons["escape.jpg"] == "unsafe_archive_path"
    assert reasons["bundle.zip!notes.txt"] == "not_an_image"
    assert all(s["path"].startswith(f"upload/{job['job_id']}/") for s in summary["skipped"])
    assert not any(server.data_dir.joinpath("uploads").rglob("*.jpg"))
    # Other users do not see the job; unknown sources are refused before anything is saved.
    assert server.client("ines").get(f"/api/v1/jobs/{job['job_id']}").status_code == 403
    assert server.client("admin").get(f"/api/v1/jobs/{job['job_id']}").status_code == 200
    nosource = op.post("/api/v1/ingest", data={"source": "nope"}, files=files[:1])
    assert nosource.status_code == 404


def test_two_person_confirmation_and_export_over_http(server):
    inv, rev = server.client("ines"), server.client("rita")
    result = search(inv, PROBES / "obama1.jpg").json()
    sid, fid = result["search_id"], result["faces"][0]["candidates"][0]["face_id"]
    body = {"search_id": sid, "face_id": fid, "decision": "confirm"}
    assert inv.post("/api/v1/confirmations", json=body).json()["status"] == "pending"
    again = inv.post("/api/v1/confirmations", json=body)
    assert again.status_code == 403 and error_of(again) == "same_person"
    assert rev.post("/api/v1/confirmations", json=body).json()["status"] == "identified"
    export = inv.get("/api/v1/cases/CASE-1/export").json()
    assert any(e["face_id"] == fid for e in export)
    searches = inv.get("/api/v1/cases/CASE-1/searches").json()
    mine = next(s for s in searches if s["search_id"] == sid)
    assert mine["candidates"][0]["status"] == "identified"


def test_subject_erasure_removes_the_face_from_later_searches(server):
    dpo, inv = server.client("dora"), server.client("ines")
    selfie = upload(PROBES / "alex_lacamoire1.jpg", "selfie")
    assert search(inv, PROBES / "alex_lacamoire1.jpg").json()["faces"][0]["candidates"]
    preview = dpo.post("/api/v1/subjects/erase/preview", files=selfie).json()
    assert [identity_of(m["media_path"]) for m in preview] == ["alex_lacamoire"]
    assert dpo.get(f"/api/v1/faces/{preview[0]['face_id']}/crop").status_code == 200
    unconfirmed = dpo.post("/api/v1/subjects/erase", files=selfie, data={"confirm": "false"})
    assert unconfirmed.status_code == 422
    receipt = dpo.post(
        "/api/v1/subjects/erase", files=selfie, data={"confirm": "true", "reference": "R-9"}
    ).json()
    assert receipt["faces"] == 1
    after = search(inv, PROBES / "alex_lacamoire1.jpg").json()
    assert after["faces"][0]["no_candidate_within_threshold"]
    html = dpo.post("/api/v1/subjects/access", files=selfie, data={"format": "html"})
    assert html.headers["content-type"].startswith("text/html") and "<html" in html.text
    kinds = [r["kind"] for r in dpo.get("/api/v1/subjects/requests").json()]
    assert "erasure" in kinds and "access" in kinds


def test_audit_over_http_filters_exports_and_verifies(server):
    aud = server.client("only-auditor")
    search(server.client("ines"), PROBES / "obama1.jpg")
    events = aud.get("/api/v1/audit/events", params={"action": "search", "limit": 5}).json()
    assert events and all(e["action"] == "search" for e in events)
    assert [e["seq"] for e in events] == sorted((e["seq"] for e in events), reverse=True)
    older = aud.get("/api/v1/audit/events", params={"before_seq": events[-1]["seq"]}).json()
    assert all(e["seq"] < events[-1]["seq"] for e in older)
    head = aud.get("/api/v1/audit/head").json()
    verified = aud.post("/api/v1/audit/verify", json={"anchors": [head]}).json()
    assert verified["ok"] and verified["anchors"] == 1
    lines = aud.get("/api/v1/audit/export", params={"format": "jsonl"}).text.splitlines()
    assert json.loads(lines[0])["seq"] == 1 and len(lines) >= head["seq"]
    csv_text = aud.get("/api/v1/audit/export", params={"format": "csv"}).text
    assert csv_text.startswith("seq,ts,actor")
    # Reading the log is itself logged.
    assert aud.get("/api/v1/audit/events", params={"action": "audit.read"}).json()


def test_console_session_needs_csrf_for_changes(server):
    web = server.client(None, follow_redirects=False)
    form = web.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    wrong = web.post("/login", data={"token": server.tokens["admin"], "csrf": "forged"})
    assert wrong.status_code == 401
    csrf = re.search(r'name="csrf" value="([^"]+)"', wrong.text).group(1)
    ok = web.post("/login", data={"token": server.tokens["admin"], "csrf": csrf})
    assert ok.status_code == 303
    cookie = ok.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert web.get("/api/v1/me").json()["name"] == "admin"
    body = {"ref": "CSRF-1", "purpose": "p", "legal_basis": "b", "authorisation": "a"}
    refused = web.post("/api/v1/cases", json=body)
    assert refused.status_code == 403 and error_of(refused) == "csrf"
    page = web.get("/cases").text
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    assert web.post("/api/v1/cases", json=body, headers={"X-CSRF-Token": token}).status_code == 201
    bad_login = server.client(None).post("/login", data={"token": "nope", "csrf": "x"})
    assert bad_login.status_code == 401


def test_health_metrics_docs_and_headers(server):
    anon = server.client(None)
    health = anon.get("/healthz")
    assert health.json()["status"] == "ok" and health.json()["index_size"] >= 5
    for header in ("content-security-policy", "x-content-type-options", "x-frame-options"):
        assert header in health.headers
    assert health.headers["cache-control"] == "no-store"
    metrics = anon.get("/metrics").text
    assert 'facewarden_http_requests_total{method="GET",route="/healthz",status="200"}' in metrics
    assert re.search(r"^facewarden_faces \d+", metrics, re.M)
    spec = anon.get("/openapi.json").json()
    assert (
        "/api/v1/search" in spec["paths"] and "HTTPBearer" in spec["components"]["securitySchemes"]
    )
    docs = anon.get("/docs").text
    assert "/static-docs/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    assert anon.get("/static-docs/swagger-ui-bundle.js").status_code == 200
    assert "# Notice" in anon.get("/api/v1/notice").text


def test_a_users_malformed_request_is_refused_and_logged_as_theirs(server):
    """FastAPI checks the values of a request before the route's rules run: an investigator's
    malformed read of the audit log (a role she lacks) is refused with 422, and the refusal is
    in the log under her name, as a refusal by a rule would be. Without a credential the
    request is refused as unauthenticated first."""
    inv = server.client("ines")
    bad = inv.get("/api/v1/audit/events", params={"limit": "lots"})
    assert bad.status_code == 422 and error_of(bad) == "invalid_request"
    anonymous = server.client(None).get("/api/v1/audit/events", params={"limit": "lots"})
    assert anonymous.status_code == 401
    aud = server.client("only-auditor")
    events = aud.get("/api/v1/audit/events", params={"action": "request.invalid"}).json()
    mine = [e for e in events if e["details"]["path"] == "/api/v1/audit/events"]
    assert len(mine) == 1 and mine[0]["actor"] == "ines" and mine[0]["outcome"] == "refused"
    assert "limit" in mine[0]["error"] and mine[0]["details"]["method"] == "GET"
    assert all(e["actor"] != "anonymous" for e in events)
    torn = inv.post(
        "/api/v1/audit/verify", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert torn.status_code == 422 and error_of(torn) == "invalid_request"  # parsed before
    # the credential is checked: refused, not logged (docs/threat-model.md)
