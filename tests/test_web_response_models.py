"""The OpenAPI document declares every JSON success body: each ``/api/v1`` JSON operation has
a response model (no bare object), and what a live server really answers validates against
it, field for field (no undeclared field, nothing lost on the way through the model).

One tour over a real server process calls every JSON operation at least once with a success;
a new route without a model, or without a call here, fails the coverage check."""

from __future__ import annotations

import asyncio
import csv
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter
from webserver import Server, running_server

from facewarden.core.results import (
    CandidateOut,
    FaceMatchesOut,
    IngestSummaryOut,
    QualityOut,
    SearchResultOut,
    SkippedOut,
    TrackMatchesOut,
    VideoSearchResultOut,
    Wire,
    derived,
)
from facewarden.core.schemas import (
    Candidate,
    FaceMatches,
    IngestSummary,
    Quality,
    SearchResult,
    Skipped,
    TimelineEntry,
    TrackMatches,
    VerifyResult,
    VideoSearchResult,
)
from facewarden.services.cases import CaseInfo
from facewarden.services.confirmations import CandidateState
from facewarden.services.jobs import Job
from facewarden.web.api import ROUTERS
from facewarden.web.models import CandidateStateOut, CaseOut, HealthOut, JobOut
from facewarden.web.routes.common import MISMATCH, PREFIX, ContractRoute

from conftest import FIXTURES, GALLERY, PROBES, REFERENCE, add_source, open_case

LFW = FIXTURES / "lfw_subjects"
CLIP = GALLERY.parent.parent / "video" / "short_hamilton_clip.mp4"
SUBJECT = "CR-2023-0042"


def json_routes() -> dict[tuple[str, str], APIRoute]:
    """(method, path template) -> route, for every ``/api/v1`` operation answering JSON."""
    routes: dict[tuple[str, str], APIRoute] = {}
    for router in ROUTERS:
        for route in router.routes:
            if not isinstance(route, APIRoute) or not route.path.startswith(PREFIX):
                continue
            answer = getattr(route.response_class, "value", route.response_class)
            if not issubclass(answer, JSONResponse):
                continue  # crops, exports, the notice: declared by media type
            for method in route.methods:
                routes[(method, route.path)] = route
    return routes


def _free_form(schema: Any) -> bool:
    """An object schema that names none of its fields (``dict[str, Any]``)."""
    if "anyOf" in schema:
        return any(_free_form(s) for s in schema["anyOf"])
    if schema.get("type") == "array":
        return _free_form(schema.get("items", {}))
    return (
        schema.get("type") == "object"
        and not schema.get("properties")
        and (schema.get("additionalProperties") in (None, True, {}))
    )


FREE_FORM = {
    "AccessReportOut.fields",  # the source system's metadata about a subject
    "AuditEntryOut.details",  # what each action records
    "DeletionReceiptOut.scope",  # a jurisdiction or source; a retention cut-off
    "ErasureReceiptOut.collateral",
    "ErasureReceiptOut.residue",
    "IngestSummaryOut.subjects",
    "ReceiptEntryOut.receipt",  # the stored receipt of its kind
    "ReviewItemOut.candidate_quality",  # quality as stored at ingest / search
    "ReviewItemOut.probe_quality",
    "SearchResultOut.calibration",
    "VideoSearchResultOut.video",  # container facts
}
"""The free-form parts of the answers; everything else is typed field by field."""


@pytest.mark.slow  # a real server process
def test_every_json_operation_declares_its_success_body(server):
    spec = httpx.get(server.url + "/openapi.json").json()
    schemas = spec["components"]["schemas"]
    checked = 0
    for (method, path), route in json_routes().items():
        op = spec["paths"][path][method.lower()]
        ok = [s for s in op["responses"] if s in ("200", "201", "202")]
        assert ok, (method, path)
        content = op["responses"][ok[0]]["content"]["application/json"]
        schema = content["schema"]
        assert schema and schema != {"type": "object", "additionalProperties": True}, (
            method,
            path,
            schema,
        )
        if "$ref" in schema:
            schema = schemas[schema["$ref"].rsplit("/", 1)[1]]
        elif schema.get("type") == "array":
            assert "$ref" in schema["items"], (method, path, schema)
            schema = schemas[schema["items"]["$ref"].rsplit("/", 1)[1]]
        assert schema.get("properties"), (method, path, schema)
        assert route.response_model is not None
        checked += 1
    assert checked >= 40
    # Binary and text answers declare their media type instead.
    for path, media in [
        ("/api/v1/faces/{face_id}/crop", "image/jpeg"),
        ("/api/v1/searches/{search_id}/faces/{face_id}/crop", "image/jpeg"),
        ("/api/v1/searches/{search_id}/probe-faces/{face_index}/crop", "image/jpeg"),
        ("/api/v1/searches/{search_id}/faces/{face_id}/source", "image/jpeg"),
        ("/api/v1/audit/export", "text/csv"),
        ("/api/v1/notice", "text/plain"),
        ("/metrics", "text/plain"),
    ]:
        assert media in next(iter(spec["paths"][path].values()))["responses"]["200"]["content"]
    # Every field is typed, but for the free-form parts named in FREE_FORM.
    free = {
        f"{name}.{field}"
        for name, schema in schemas.items()
        for field, sub in schema.get("properties", {}).items()
        if _free_form(sub)
    }
    assert free == FREE_FORM


def undeclared(value: Any, path: str = "") -> list[str]:
    """Fields a response carried that its model does not declare (kept as extras)."""
    if isinstance(value, BaseModel):
        found = [f"{path}.{k}" for k in value.model_extra or {}]
        for name in type(value).model_fields:
            found += undeclared(getattr(value, name), f"{path}.{name}")
        return found
    if isinstance(value, list | tuple):
        return [x for i, v in enumerate(value) for x in undeclared(v, f"{path}[{i}]")]
    if isinstance(value, dict):
        return [x for k, v in value.items() for x in undeclared(v, f"{path}.{k}")]
    return []


def assert_carries(model: Any, produced: Any) -> None:
    """``produced`` validates against ``model`` with no undeclared field, and the model
    gives back exactly what went in (nothing added, nothing lost)."""
    adapter: TypeAdapter[Any] = TypeAdapter(model)
    value = adapter.validate_python(produced)
    assert not undeclared(value), undeclared(value)
    assert adapter.dump_python(value, mode="json", exclude_unset=True) == produced


class Tour:
    """Calls operations, checks each answer against the operation's model, counts them."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.routes = json_routes()
        self.called: set[tuple[str, str]] = set()

    def call(self, user: str, method: str, template: str, status: int = 200, **kw) -> Any:
        params = kw.pop("path", {})
        r = self.server.client(user).request(method, template.format(**params), **kw)
        assert r.status_code == status, (method, template, r.status_code, r.text)
        body = r.json()
        route = self.routes[(method, template)]
        try:
            assert_carries(route.response_model, body)
        except Exception as exc:
            raise AssertionError(f"{method} {template}: {exc}") from exc
        self.called.add((method, template))
        return body


@pytest.fixture(scope="module")
def server(tmp_path_factory, pipeline) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("models")

    def prepare(fw, admin):
        # Two photos of one person linked to a subject of the source system.
        add_source(fw, admin, "custody", jurisdiction="FR")
        files = sorted(LFW.glob("Hans_Blix_*.jpg"))
        manifest = root / "manifest.csv"
        with manifest.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["file", "subject"])
            writer.writerows([str(f), SUBJECT] for f in files)
        fw.ingest.run(admin, files, "custody", manifest=manifest)
        open_case(
            fw, admin, "CASE-2", investigators=["ines"], threshold_policy="fpir", target_fpir=0.01
        )

    with running_server(root, pipeline, prepare, FACEWARDEN_SEARCH_RATE_LIMIT="1000/minute") as s:
        yield s


def upload(path, field="image"):
    return {field: (path.name, path.read_bytes(), "image/jpeg")}


@pytest.mark.slow  # a real server process and a tour of every operation
def test_every_live_answer_validates_against_its_model(server):
    t = Tour(server)
    t.call("admin", "GET", "/api/v1/me")
    t.call("admin", "GET", "/api/v1/stats")
    t.call("admin", "GET", "/api/v1/sources")
    t.call(
        "admin",
        "POST",
        "/api/v1/sources",
        201,
        json={
            "name": "extra",
            "lawful_basis": "consent",
            "purpose": "test",
            "jurisdiction": "DE",
            "retention": "30d",
        },
    )

    # Ingest as a background job: queued, then done with its summary.
    job = t.call(
        "admin",
        "POST",
        "/api/v1/ingest",
        202,
        data={"source": "extra"},
        files=[
            ("files", (p.name, p.read_bytes(), "image/jpeg"))
            for p in [REFERENCE / "obama2.jpg", REFERENCE / "biden.jpg"]
        ],
    )
    ref = {"job_id": job["job_id"]}
    for _ in range(600):
        job = t.call("admin", "GET", "/api/v1/jobs/{job_id}", path=ref)
        if job["finished_at"]:
            break
        time.sleep(0.2)
    assert job["state"] == "done" and job["summary"]["faces"] == 2, job
    t.call("admin", "GET", "/api/v1/jobs")
    t.call("admin", "POST", "/api/v1/jobs/{job_id}/cancel", path=ref)

    # Searches: photo, video, 1:1.
    result = t.call(
        "ines",
        "POST",
        "/api/v1/search",
        files=upload(PROBES / "obama1.jpg"),
        data={"case": "CASE-1"},
    )
    top = result["faces"][0]["candidates"][0]
    assert top["crop_url"]
    fpir = t.call(
        "ines",
        "POST",
        "/api/v1/search",
        files=upload(PROBES / "obama1.jpg"),
        data={"case": "CASE-2"},
    )
    assert fpir["threshold_policy"]["policy"] == "fpir", fpir["threshold_policy"]
    video = t.call(
        "ines",
        "POST",
        "/api/v1/search/video",
        files={"video": ("clip.mp4", CLIP.read_bytes(), "video/mp4")},
        data={"case": "CASE-1", "fps": "1"},
    )
    assert video["tracks"] and video["tracks"][0]["thumbnail_jpeg"]
    t.call(
        "ines",
        "POST",
        "/api/v1/verify",
        files={**upload(PROBES / "obama1.jpg", "a"), **upload(REFERENCE / "obama.jpg", "b")},
        data={"case": "CASE-1"},
    )

    # Cases and the two-person rule.
    case = {"ref": "CASE-1"}
    t.call("admin", "GET", "/api/v1/cases")
    t.call(
        "admin",
        "POST",
        "/api/v1/cases",
        201,
        json={
            "ref": "CASE-9",
            "purpose": "p",
            "legal_basis": "lb",
            "authorisation": "a",
            "investigators": ["ines"],
        },
    )
    t.call("admin", "GET", "/api/v1/cases/{ref}", path={"ref": "CASE-9"})
    t.call(
        "admin",
        "POST",
        "/api/v1/cases/{ref}/members",
        path={"ref": "CASE-9"},
        json={"user": "rita"},
    )
    t.call("admin", "POST", "/api/v1/cases/{ref}/close", path={"ref": "CASE-9"})
    decision = {"search_id": result["search_id"], "face_id": top["face_id"], "decision": "confirm"}
    t.call("ines", "POST", "/api/v1/confirmations", json=decision)
    state = t.call("rita", "POST", "/api/v1/confirmations", json=decision)
    assert state["status"] == "identified"
    searches = t.call("ines", "GET", "/api/v1/cases/{ref}/searches", path=case)
    assert any(s["candidates"] for s in searches)
    assert t.call("ines", "GET", "/api/v1/cases/{ref}/candidates", path=case)
    sheet = t.call("ines", "GET", "/api/v1/cases/{ref}/review", path=case)
    assert sheet["items"]
    assert t.call("ines", "GET", "/api/v1/cases/{ref}/export", path=case)

    # Subjects: access, erasure with a candidate left for review, the review, by reference.
    selfie = upload(REFERENCE / "biden.jpg", "selfie")
    access = t.call("dora", "POST", "/api/v1/subjects/access", files=selfie)
    assert access
    preview = t.call(
        "dora", "POST", "/api/v1/subjects/erase/preview", files=selfie, data={"threshold": "0.5"}
    )
    assert len(preview) >= 2, preview
    receipt = t.call(
        "dora",
        "POST",
        "/api/v1/subjects/erase",
        files=selfie,
        data={"confirm": "true", "threshold": "0.5", "face_ids": [str(preview[0]["face_id"])]},
    )
    assert receipt["review"], receipt
    t.call(
        "dora",
        "POST",
        "/api/v1/subjects/erasures/{request_id}/review",
        path={"request_id": receipt["request_id"]},
        json={"release": [receipt["review"][0]["face_id"]]},
    )
    subject = {"subject": SUBJECT}
    by_reference = t.call("dora", "POST", "/api/v1/subjects/by-reference/access", json=subject)
    # A field only other answers carry is left out, not sent as null: no distance for a face
    # found by reference, no subject in an access report by selfie.
    assert by_reference["matches"] and "distance" not in by_reference["matches"][0]
    assert "subject" not in access and "proposal" not in access["matches"][0]
    t.call("dora", "POST", "/api/v1/subjects/by-reference/restrict", json=subject)
    t.call("dora", "POST", "/api/v1/subjects/by-reference/erase", json=subject | {"confirm": True})
    assert t.call("dora", "GET", "/api/v1/subjects/requests")
    assert t.call("dora", "GET", "/api/v1/subjects/receipts")["receipts"]

    # Gallery upkeep.
    media_id = top["media_id"]
    t.call(
        "dora", "POST", "/api/v1/media/{media_id}/restrict", path={"media_id": media_id}, json={}
    )
    t.call("admin", "DELETE", "/api/v1/media/{media_id}", path={"media_id": media_id})
    t.call("admin", "POST", "/api/v1/index/rebuild")
    t.call("admin", "POST", "/api/v1/retention/run")
    t.call("dora", "POST", "/api/v1/purge", json={"source": "extra"})
    t.call("admin", "DELETE", "/api/v1/sources/{name}", path={"name": "extra"})

    # Users.
    t.call("admin", "GET", "/api/v1/users")
    t.call("admin", "POST", "/api/v1/users", 201, json={"name": "newbie", "roles": ["auditor"]})
    t.call("admin", "POST", "/api/v1/users/{name}/disable", path={"name": "newbie"})
    t.call("admin", "POST", "/api/v1/users/{name}/enable", path={"name": "newbie"})
    t.call("admin", "POST", "/api/v1/users/{name}/token", path={"name": "newbie"})

    # Oversight.
    assert t.call("admin", "GET", "/api/v1/audit/events", params={"limit": 500})
    head = t.call("admin", "GET", "/api/v1/audit/head")
    verified = t.call("admin", "POST", "/api/v1/audit/verify", json={"anchors": [head]})
    assert verified["ok"], verified
    t.call("admin", "GET", "/api/v1/report")
    health = httpx.get(server.url + "/healthz")
    assert_carries(HealthOut, health.json())

    assert t.called == set(t.routes), sorted(set(t.routes) - t.called)
    # The server checked every answer against its model too, and found nothing to log.
    assert MISMATCH not in server.log.read_text()


# -- The models against the results the services build (fast: no server) -------------------
# The tour above sees the answers of one gallery; these build each result in full, with the
# fields only some answers carry, so a field added to a result without its model fails here.


def _candidate(**kw: Any) -> Candidate:
    return Candidate(
        rank=1,
        distance=0.31,
        score=0.97,
        face_id=4,
        media_id=3,
        media_path="gallery/obama.jpg",
        source="press",
        box=[1, 2, 3, 4],
        jurisdiction="DE",
        ingested_at="2026-01-01T00:00:00+00:00",
        media_sha256="ab" * 32,
        time_s=1.5,
        track=2,
        fmr=1e-6,
        expected_strangers=0.01,
        subject="CR-1",
        subject_id=9,
        faces_matched=2,
        duplicates_collapsed=1,
        grouped_face_ids=[5],
        **kw,
    )


QUALITY = Quality(64, 64, 120.5, 0.1, "frontal", 1.02, ("small",))


def test_search_results_as_the_services_build_them():
    faces = FaceMatches(
        [1, 2, 3, 4],
        QUALITY.as_dict(),
        [_candidate()],
        expected_false_candidates=0.02,
        quality_problems=["blurred"],
    )
    result = SearchResult(
        "probe.jpg",
        "cd" * 32,
        "CASE-1",
        0.6,
        9,
        "dlib",
        [faces, FaceMatches([5, 6, 7, 8], QUALITY.as_dict(), searched=False)],
        audit_seq=3,
        search_id=1,
        notes=["reduced"],
        threshold_policy={"policy": "fixed", "set_by": "settings"},
        calibration={"model": "dlib", "recipe": {"detector": "cnn"}},
        detector="cnn-up0",
    )
    assert_carries(SearchResultOut, result.as_dict())
    track = TrackMatches(1, 0.5, 2.0, 1.0, [1, 2, 3, 4], QUALITY.as_dict(), 3, [_candidate()])
    timeline = TimelineEntry(4, [4, 5], 3, "v.mp4", "cctv", "DE", 0.3, 0.97, [[0.5, 2.0]], [1], 1)
    video = VideoSearchResult(
        "clip.mp4",
        "ef" * 32,
        "CASE-1",
        0.6,
        9,
        "dlib",
        {"width": 640, "duration_s": 9.1},
        [track],
        [timeline],
        partial="truncated",
        audit_seq=4,
        search_id=2,
        threshold_policy={"policy": "fpir", "target_fpir": 0.01, "within_target": True},
        detector="cnn-up0",
    )
    data = video.as_dict()
    data["tracks"][0]["thumbnail_jpeg"] = "/9j/"
    assert_carries(VideoSearchResultOut, data)
    assert_carries(VerifyResult, VerifyResult(True, 0.3, 0.6, 1, 1).as_dict())


def test_cases_jobs_and_ingest_summaries_as_the_services_build_them():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    case = CaseInfo(
        "CASE-1", "p", "lb", "a", "theft", "closed", "admin", now, now, now,
        ["ines"], 100, 2, True, ["rita"], "fpir", 0.01,
    )  # fmt: skip
    assert_carries(CaseOut, case.as_dict())
    summary = IngestSummary(
        "press",
        images=2,
        faces=2,
        skipped=[Skipped("a.txt", "not an image", "not_an_image")],
        partial=[Skipped("v.mp4", "truncated", "truncated")],
        subjects={"linked": 2, "created": 1, "unlinked": []},
        elapsed_s=1.0,
        notes=["reduced"],
    )
    job = Job("j1", "admin", "press", ["a.jpg"], summary=summary.as_dict())
    assert_carries(JobOut, job.as_dict())
    failed = Job("j2", "admin", "press", ["a.jpg"], state="failed")
    failed.error = {"code": "internal", "message": "boom"}
    assert_carries(JobOut, failed.as_dict())


DERIVED = [
    (Quality, QualityOut),
    (Candidate, CandidateOut),
    (FaceMatches, FaceMatchesOut),
    (SearchResult, SearchResultOut),
    (TrackMatches, TrackMatchesOut),
    (VideoSearchResult, VideoSearchResultOut),
    (Skipped, SkippedOut),
    (IngestSummary, IngestSummaryOut),
    (CaseInfo, CaseOut),
    (CandidateState, CandidateStateOut),
]


def test_the_models_of_dataclass_results_are_derived_from_the_dataclasses():
    """One description of a result: its dataclass. Its model carries every field of it (a
    field added to the dataclass is in the contract without a second edit), documented by
    the dataclass's docstrings, and declares only what the answer sends otherwise."""
    for source, model in DERIVED:
        assert {f.name for f in fields(source)} <= set(model.model_fields), model
    job = {f.name for f in fields(Job)} - {"id", "cancel"} | {"job_id"}
    assert job <= set(JobOut.model_fields) and "cancel" not in JobOut.model_fields
    fmr = CandidateOut.model_fields["fmr"].description or ""
    assert fmr.startswith("Calibrated false match rate per comparison")
    assert FaceMatchesOut.model_fields["quality"].annotation is QualityOut

    @dataclass
    class Result:
        count: int
        """How many."""
        when: datetime
        note: str | None = None

    @derived(Result, rename={"count": "total"})
    class ResultOut(Wire):
        """A result."""

        when: str
        url: str | None = None

    assert list(ResultOut.model_fields) == ["total", "when", "note", "url"]
    total, when, note, url = ResultOut.model_fields.values()
    assert total.is_required() and total.annotation is int and total.description == "How many."
    assert when.annotation is str and note.is_required() and not url.is_required()
    assert ResultOut.__doc__ == "A result." and ResultOut.__name__ == "ResultOut"
    with pytest.raises(TypeError, match="has no field nope"):
        derived(Result, drop=("nope",))


class _Pair(Wire):
    a: float
    b: int
    note: str | None = None


def test_a_route_sends_the_service_dict_as_it_is_and_logs_a_mismatch(caplog):
    """ContractRoute: no field added, dropped, reordered or turned into a float; an answer
    that breaks its model is logged and still sent (the API never answers 500 for it)."""
    router = APIRouter(route_class=ContractRoute)

    @router.get("/ok", response_model=_Pair, status_code=202)
    def ok() -> dict[str, Any]:
        return {"b": 1, "a": 2, "more": [1]}

    @router.get("/broken", response_model=list[_Pair])
    def broken() -> list[dict[str, Any]]:
        return [{"a": "not a number", "b": 1}]

    app = FastAPI()
    app.include_router(router)

    async def get(path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path)

    r = asyncio.run(get("/ok"))
    assert r.status_code == 202 and r.headers["content-type"] == "application/json"
    assert r.content == b'{"b":1,"a":2,"more":[1]}'
    with caplog.at_level(logging.ERROR, logger="facewarden.web"):
        r = asyncio.run(get("/broken"))
    assert r.status_code == 200 and r.json() == [{"a": "not a number", "b": 1}]
    assert any(MISMATCH in m and "0.a" in m for m in caplog.messages), caplog.messages
    schema = app.openapi()["paths"]["/ok"]["get"]["responses"]["202"]["content"]
    assert schema["application/json"]["schema"] == {"$ref": "#/components/schemas/_Pair"}
