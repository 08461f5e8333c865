"""The JSON API (``/api/v1``): a thin layer over the core services.

Each route turns HTTP into one service call with the caller's ``Actor``; the services decide
what the actor may do, log it and enforce the rules. Nothing here checks a role itself.
"""

from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path as FsPath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Path, Query, Request, Response, UploadFile
from fastapi.responses import HTMLResponse, PlainTextResponse
from pydantic import AfterValidator, BaseModel, Field

from facewarden.core.errors import InvalidInput, Refused
from facewarden.services.subjects import render_report_html
from facewarden.web.auth import CurrentActor, LimitedActor, get_fw

router = APIRouter(prefix="/api/v1")
Json = dict[str, Any]
MAX_ID = 2**31 - 1
"""Ids are INTEGER columns (32-bit on PostgreSQL): anything larger is a 422, not a
database error."""


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("text must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
"""Every text input: PostgreSQL cannot store NUL, so it is refused at the door (422)."""
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]


def read_upload(upload: UploadFile, request: Request, what: str = "image") -> bytes:
    limit = get_fw(request).settings.max_file_bytes
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise InvalidInput(f"{what} is over the limit of {limit} bytes (FACEWARDEN_MAX_FILE_BYTES)")
    if not data:
        raise InvalidInput(f"{what} is empty")
    return data


@contextmanager
def upload_to_file(upload: UploadFile, folder: FsPath, limit: int) -> Iterator[FsPath]:
    """Stream an upload to a private temporary file (videos are never read whole into
    memory); the file is removed afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix="probe-", suffix=".video")
    path = FsPath(name)
    try:
        with os.fdopen(fd, "wb") as out:
            size = 0
            while chunk := upload.file.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise InvalidInput(f"video is over the limit of {limit} bytes")
                out.write(chunk)
        if size == 0:
            raise InvalidInput("video is empty")
        yield path
    finally:
        path.unlink(missing_ok=True)


@contextmanager
def counted_search(request: Request) -> Iterator[None]:
    """Count one search (photo or video) in the metrics as ok, refused or error."""
    searches = request.app.state.metrics.searches
    try:
        yield
    except Exception as exc:
        searches.labels("refused" if isinstance(exc, Refused) else "error").inc()
        raise
    searches.labels("ok").inc()


def with_crop_urls(result: Json) -> Json:
    """Add each candidate's crop URL: per probe face (photo) or per track (video)."""
    sid = result.get("search_id")
    for n, probe_face in enumerate(result.get("faces", []) + result.get("tracks", [])):
        if probe_face.get("searched", True):
            probe_face["probe_crop_url"] = f"/api/v1/searches/{sid}/probe-faces/{n}/crop"
        for c in probe_face["candidates"]:
            c["crop_url"] = f"/api/v1/searches/{sid}/faces/{c['face_id']}/crop"
    return result


# -- who am I, stats ------------------------------------------------------------------------
@router.get("/me", tags=["session"])
def me(actor: CurrentActor) -> Json:
    """The calling user and roles."""
    return {"name": actor.name, "roles": sorted(actor.roles)}


@router.get("/stats", tags=["gallery"])
def stats(request: Request, actor: CurrentActor) -> Json:
    """Counts of sources, media, faces and the index."""
    return get_fw(request).stats()


# -- sources and ingest ---------------------------------------------------------------------
class SourceIn(BaseModel):
    name: Text = Field(min_length=1, max_length=100)
    lawful_basis: Text = Field(min_length=1)
    purpose: Text = Field(min_length=1)
    jurisdiction: Text = Field(min_length=2, max_length=2, examples=["DE"])
    retention: Text = Field(examples=["365d"])
    note: Text | None = None


@router.get("/sources", tags=["sources"])
def list_sources(request: Request, actor: CurrentActor) -> list[Json]:
    """Registered sources with their media counts."""
    return [vars(s) for s in get_fw(request).sources.list()]


@router.post("/sources", status_code=201, tags=["sources"])
def add_source(body: SourceIn, request: Request, actor: CurrentActor) -> Json:
    """Register a source: lawful basis, purpose, jurisdiction and retention are mandatory."""
    info = get_fw(request).sources.add(
        actor,
        body.name,
        lawful_basis=body.lawful_basis,
        purpose=body.purpose,
        jurisdiction=body.jurisdiction,
        retention=body.retention,
        note=body.note,
    )
    return vars(info)


@router.delete("/sources/{name}", tags=["sources"])
def delete_source(name: Text, request: Request, actor: CurrentActor) -> Json:
    """Delete a source with all its media, faces, templates, crops and index entries."""
    return get_fw(request).gallery.delete_source(actor, name)


@router.post("/ingest", status_code=202, tags=["ingest"])
def ingest(
    request: Request,
    actor: CurrentActor,
    source: Annotated[Text, Form(min_length=1)],
    files: Annotated[list[UploadFile], File(description="Images or .zip archives.")],
) -> Json:
    """Upload images or zip archives into a source; ingest runs as a background job."""
    job = request.app.state.jobs.submit(
        actor, source, ((f.filename or "upload", f.file) for f in files)
    )
    return job.as_dict()


@router.get("/jobs", tags=["ingest"])
def list_jobs(request: Request, actor: CurrentActor) -> list[Json]:
    """The caller's ingest jobs, newest first (admins: everyone's)."""
    return [j.as_dict() for j in request.app.state.jobs.list(actor)]


@router.get("/jobs/{job_id}", tags=["ingest"])
def get_job(job_id: Text, request: Request, actor: CurrentActor) -> Json:
    """Progress and, when finished, the summary with skipped files and reasons."""
    return request.app.state.jobs.get(actor, job_id).as_dict()


@router.post("/jobs/{job_id}/cancel", tags=["ingest"])
def cancel_job(job_id: Text, request: Request, actor: CurrentActor) -> Json:
    """Stop a job after the image in progress (stored images stay complete)."""
    return request.app.state.jobs.cancel(actor, job_id).as_dict()


# -- search and verify ----------------------------------------------------------------------
@router.post("/search", tags=["search"])
def search(
    request: Request,
    actor: LimitedActor,
    image: Annotated[UploadFile, File(description="Probe photo.")],
    case: Annotated[Text, Form(description="Case reference (required).")],
    top_k: Annotated[int | None, Form(ge=1, le=100)] = None,
    threshold: Annotated[float | None, Form(gt=0, le=2)] = None,
    allow_low_quality: Annotated[
        bool,
        Form(description="Search probe faces below the quality bar too (logged)."),
    ] = False,
) -> Json:
    """Ranked candidates for every face of the probe that meets the quality bar, with
    provenance and crop URLs; each face's quality and its problems."""
    with counted_search(request):
        result = get_fw(request).search.search(
            actor,
            read_upload(image, request),
            case=case,
            probe_name=image.filename or "probe",
            top_k=top_k,
            threshold=threshold,
            allow_low_quality=allow_low_quality,
        )
    return with_crop_urls(result.as_dict())


@router.post("/search/video", tags=["search"])
def search_video(
    request: Request,
    actor: LimitedActor,
    video: Annotated[UploadFile, File(description="Probe video (streamed to a temporary file).")],
    case: Annotated[Text, Form(description="Case reference (required).")],
    fps: Annotated[float | None, Form(gt=0, le=60)] = None,
    top_k: Annotated[int | None, Form(ge=1, le=100)] = None,
    threshold: Annotated[float | None, Form(gt=0, le=2)] = None,
    allow_low_quality: Annotated[
        bool, Form(description="Search tracks below the quality bar too (logged).")
    ] = False,
) -> Json:
    """Face tracks of a probe video, each with its candidates, and a timeline of who appears
    when. Each track's best face crop comes as base64 JPEG (``thumbnail_jpeg``)."""
    fw = get_fw(request)
    limit = fw.settings.max_video_bytes
    with counted_search(request), upload_to_file(video, fw.settings.upload_dir, limit) as path:
        result = fw.video.search(
            actor,
            path,
            case=case,
            probe_name=video.filename or "video",
            fps=fps,
            top_k=top_k,
            threshold=threshold,
            allow_low_quality=allow_low_quality,
        )
    data = with_crop_urls(result.as_dict())
    for track, out in zip(result.tracks, data["tracks"], strict=True):
        thumb = track.thumbnail_jpeg
        out["thumbnail_jpeg"] = base64.b64encode(thumb).decode() if thumb else None
    return data


@router.post("/verify", tags=["search"])
def verify(
    request: Request,
    actor: LimitedActor,
    a: Annotated[UploadFile, File()],
    b: Annotated[UploadFile, File()],
    case: Annotated[
        Text | None,
        Form(description="Case reference (required: an open case you are assigned to)."),
    ] = None,
    threshold: Annotated[float | None, Form(gt=0, le=2)] = None,
) -> Json:
    """1:1 under a case: are the largest faces of two images the same person? Uses the
    case's search quota and is logged under it."""
    res = get_fw(request).search.verify(
        actor,
        read_upload(a, request, "image a"),
        read_upload(b, request, "image b"),
        threshold=threshold,
        case=case,
    )
    return res.as_dict()


@router.get(
    "/searches/{search_id}/faces/{face_id}/crop",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
    tags=["search"],
)
def search_crop(
    search_id: IdPath, face_id: IdPath, request: Request, actor: CurrentActor
) -> Response:
    """The face crop of a candidate that this search returned."""
    data = get_fw(request).gallery.crop(actor, face_id, search_id=search_id)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})


@router.get(
    "/searches/{search_id}/probe-faces/{face_index}/crop",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
    tags=["search"],
)
def probe_crop(
    search_id: IdPath,
    face_index: Annotated[int, Path(ge=0, le=10_000)],
    request: Request,
    actor: CurrentActor,
) -> Response:
    """The kept crop of a searched probe face (case-scoped, logged)."""
    data = get_fw(request).review.probe_face(actor, search_id, face_index)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})


@router.get(
    "/searches/{search_id}/faces/{face_id}/source",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
    tags=["search"],
)
def source_photo(
    search_id: IdPath, face_id: IdPath, request: Request, actor: CurrentActor
) -> Response:
    """A candidate's full source photo with its box drawn (case-scoped, logged)."""
    data = get_fw(request).review.source_photo(actor, search_id, face_id)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})


@router.get(
    "/faces/{face_id}/crop",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
    tags=["subjects"],
)
def face_crop(face_id: IdPath, request: Request, actor: CurrentActor) -> Response:
    """Any held face's crop (data-protection officer: access and erasure review)."""
    data = get_fw(request).gallery.crop(actor, face_id)
    return Response(data, media_type="image/jpeg")


# -- cases and confirmations ----------------------------------------------------------------
class CaseIn(BaseModel):
    ref: Text = Field(min_length=1, max_length=100)
    purpose: Text = Field(min_length=1)
    legal_basis: Text = Field(min_length=1)
    authorisation: Text = Field(min_length=1)
    offence: Text | None = None
    expires: Text = "30d"
    investigators: list[Text] = []
    quota: int | None = Field(None, ge=1, le=1_000_000)
    keep_probe_templates: bool = False
    threshold_policy: Literal["fixed", "fpir"] | None = None
    target_fpir: float | None = Field(None, gt=0, lt=1)


class MemberIn(BaseModel):
    user: Text = Field(min_length=1)
    remove: bool = False


class DecisionIn(BaseModel):
    search_id: int = Field(ge=1, le=MAX_ID)
    face_id: int = Field(ge=1, le=MAX_ID)
    decision: Literal["confirm", "reject"]
    note: Text | None = None


@router.get("/cases", tags=["cases"])
def list_cases(request: Request, actor: CurrentActor) -> list[Json]:
    return [c.as_dict() for c in get_fw(request).cases.list(actor)]


@router.post("/cases", status_code=201, tags=["cases"])
def open_case(body: CaseIn, request: Request, actor: CurrentActor) -> Json:
    """Open a case: purpose, legal basis and authorisation are required."""
    return (
        get_fw(request)
        .cases.open(
            actor,
            body.ref,
            purpose=body.purpose,
            legal_basis=body.legal_basis,
            authorisation=body.authorisation,
            offence=body.offence,
            expires=body.expires,
            investigators=body.investigators,
            quota=body.quota,
            keep_probe_templates=body.keep_probe_templates,
            threshold_policy=body.threshold_policy,
            target_fpir=body.target_fpir,
        )
        .as_dict()
    )


@router.get("/cases/{ref}", tags=["cases"])
def show_case(ref: Text, request: Request, actor: CurrentActor) -> Json:
    return get_fw(request).cases.show(actor, ref).as_dict()


@router.post("/cases/{ref}/close", tags=["cases"])
def close_case(ref: Text, request: Request, actor: CurrentActor) -> Json:
    """Close a case: no more searches; its kept probe templates are wiped."""
    return get_fw(request).cases.close(actor, ref).as_dict()


@router.post("/cases/{ref}/members", tags=["cases"])
def assign(ref: Text, body: MemberIn, request: Request, actor: CurrentActor) -> Json:
    """Assign an investigator or a reviewer to the case (or remove one)."""
    return get_fw(request).cases.assign(actor, ref, body.user, remove=body.remove).as_dict()


@router.get("/cases/{ref}/searches", tags=["cases"])
def case_searches(ref: Text, request: Request, actor: CurrentActor) -> list[Json]:
    """The case's searches with their candidates and each candidate's state."""
    return get_fw(request).confirmations.searches(actor, ref)


@router.get("/cases/{ref}/candidates", tags=["cases"])
def case_candidates(ref: Text, request: Request, actor: CurrentActor) -> list[Json]:
    """Decided candidates with every decision (pending, identified, rejected)."""
    return [s.as_dict() for s in get_fw(request).confirmations.candidates(actor, ref)]


@router.get("/cases/{ref}/review", tags=["cases"])
def case_review(
    ref: Text,
    request: Request,
    actor: CurrentActor,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=100)] = 12,
) -> Json:
    """One page of the case's candidates for review: probe face beside candidate, distance,
    quality of both, provenance, decisions, erased faces marked (case-scoped, logged)."""
    sheet = get_fw(request).review.sheet(actor, ref, page=page, per_page=per_page)
    for item in sheet["items"]:
        sid = item["search_id"]
        if item["probe_kept"]:
            item["probe_crop_url"] = f"/api/v1/searches/{sid}/probe-faces/{item['probe_face']}/crop"
        if not item["erased"]:
            item["crop_url"] = f"/api/v1/searches/{sid}/faces/{item['face_id']}/crop"
            item["source_url"] = f"/api/v1/searches/{sid}/faces/{item['face_id']}/source"
    return sheet


@router.get("/cases/{ref}/export", tags=["cases"])
def case_export(
    ref: Text,
    request: Request,
    actor: CurrentActor,
    search_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    face_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> list[Json]:
    """Identifications (two-person confirmed) of the case with provenance."""
    return get_fw(request).confirmations.export(actor, ref, search_id=search_id, face_id=face_id)


@router.post("/confirmations", tags=["cases"])
def decide(body: DecisionIn, request: Request, actor: CurrentActor) -> Json:
    """Confirm or reject a candidate; identified once an assigned investigator and a
    different reviewer confirmed."""
    state = get_fw(request).confirmations.decide(
        actor, body.search_id, body.face_id, body.decision, body.note
    )
    return state.as_dict()


# -- data subjects, purges, retention -------------------------------------------------------
@router.post(
    "/subjects/access",
    tags=["subjects"],
    responses={200: {"content": {"application/json": {}, "text/html": {}}}},
)
def subject_access(
    request: Request,
    actor: LimitedActor,
    selfie: Annotated[UploadFile, File()],
    reference: Annotated[Text | None, Form()] = None,
    threshold: Annotated[float | None, Form(gt=0, le=2)] = None,
    format: Annotated[Literal["json", "html"], Form()] = "json",
) -> Any:
    """Everything held about the person in the selfie (JSON, or the HTML report to send)."""
    report = get_fw(request).subjects.access(
        actor, read_upload(selfie, request, "selfie"), reference=reference, threshold=threshold
    )
    if format == "html":
        return HTMLResponse(render_report_html(report))
    return report


@router.post("/subjects/erase/preview", tags=["subjects"])
def erase_preview(
    request: Request,
    actor: LimitedActor,
    selfie: Annotated[UploadFile, File()],
    threshold: Annotated[float | None, Form(gt=0, le=2)] = None,
) -> list[Json]:
    """The faces an erasure would delete (nothing changes; the look-up is logged)."""
    return get_fw(request).subjects.erase_preview(
        actor, read_upload(selfie, request, "selfie"), threshold=threshold
    )


@router.post("/subjects/erase", tags=["subjects"])
def erase(
    request: Request,
    actor: LimitedActor,
    selfie: Annotated[UploadFile, File()],
    confirm: Annotated[bool, Form(description="Must be true: erasure cannot be undone.")],
    reference: Annotated[Text | None, Form()] = None,
    threshold: Annotated[float | None, Form(gt=0, le=2)] = None,
    face_ids: Annotated[
        list[Annotated[int, Field(ge=1, le=MAX_ID)]] | None,
        Form(description="Only these reviewed faces."),
    ] = None,
) -> Json:
    """Erase the person's faces and put them on the suppression list; returns the receipt."""
    if not confirm:
        raise InvalidInput("erasure cannot be undone: preview it, then send confirm=true")
    return get_fw(request).subjects.erase(
        actor,
        read_upload(selfie, request, "selfie"),
        reference=reference,
        threshold=threshold,
        face_ids=face_ids or None,
    )


class ReviewDecision(BaseModel):
    erase: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(
        default_factory=list, max_length=10_000
    )
    release: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(
        default_factory=list, max_length=10_000
    )


@router.post("/subjects/erasures/{request_id}/review", tags=["subjects"])
def erasure_review(
    request: Request,
    actor: LimitedActor,
    request_id: IdPath,
    decision: ReviewDecision,
) -> Json:
    """The DPO's decision on an erasure's review candidates (erase or release each)."""
    return get_fw(request).subjects.review(
        actor, request_id, erase=decision.erase, release=decision.release
    )


@router.get("/subjects/requests", tags=["subjects"])
def subject_requests(request: Request, actor: CurrentActor) -> list[Json]:
    """Access and erasure requests with their receipts and time to completion."""
    return get_fw(request).subjects.requests(actor)


@router.get("/subjects/receipts", tags=["subjects"])
def subject_receipts(request: Request, actor: CurrentActor) -> list[Json]:
    """Access, erasure and restriction receipts, newest first, each with its counts (faces
    erased, collateral, residue) and the full receipt."""
    return get_fw(request).subjects.receipts(actor)


class SubjectRefIn(BaseModel):
    subject: Text = Field(min_length=1, max_length=200)
    source: Text | None = Field(None, max_length=200)


class SubjectEraseIn(SubjectRefIn):
    confirm: bool = Field(description="Must be true: erasure cannot be undone.")


class SubjectRestrictIn(SubjectRefIn):
    restricted: bool = True


@router.post("/subjects/by-reference/access", tags=["subjects"])
def subject_access_by_reference(body: SubjectRefIn, request: Request, actor: LimitedActor) -> Json:
    """Everything held about a subject of the source system (ingest manifest reference)."""
    return get_fw(request).subject_records.access(actor, body.subject, source=body.source)


@router.post("/subjects/by-reference/erase", tags=["subjects"])
def subject_erase_by_reference(body: SubjectEraseIn, request: Request, actor: LimitedActor) -> Json:
    """Erase every face linked to the subject and the subject record; returns the receipt."""
    if not body.confirm:
        raise InvalidInput("erasure cannot be undone: send confirm=true")
    return get_fw(request).subject_records.erase(actor, body.subject, source=body.source)


@router.post("/subjects/by-reference/restrict", tags=["subjects"])
def subject_restrict_by_reference(
    body: SubjectRestrictIn, request: Request, actor: LimitedActor
) -> Json:
    """Exclude every media of the subject from search (or lift that)."""
    return get_fw(request).subject_records.restrict(
        actor, body.subject, source=body.source, restricted=body.restricted
    )


class PurgeIn(BaseModel):
    jurisdiction: Text | None = Field(None, min_length=2, max_length=2)
    source: Text | None = None


@router.post("/purge", tags=["gallery"])
def purge(body: PurgeIn, request: Request, actor: CurrentActor) -> Json:
    """Delete every record of one jurisdiction or one source; returns the receipt."""
    return get_fw(request).gallery.purge(actor, jurisdiction=body.jurisdiction, source=body.source)


@router.post("/retention/run", tags=["gallery"])
def retention_run(request: Request, actor: CurrentActor) -> Json:
    """Delete what has passed its retention date now (the server also runs it periodically)."""
    return get_fw(request).gallery.retention_run(actor)


class RestrictIn(BaseModel):
    restricted: bool = True


@router.post("/media/{media_id}/restrict", tags=["gallery"])
def restrict(media_id: IdPath, body: RestrictIn, request: Request, actor: CurrentActor) -> Json:
    """Restrict a media from search (or lift the restriction), e.g. while a claim is checked."""
    get_fw(request).gallery.restrict(actor, media_id, restricted=body.restricted)
    return {"media_id": media_id, "restricted": body.restricted}


@router.delete("/media/{media_id}", tags=["gallery"])
def delete_media(media_id: IdPath, request: Request, actor: CurrentActor) -> Json:
    """Delete one media with its faces, templates, crops and index entries."""
    return get_fw(request).gallery.delete_media(actor, [media_id])


@router.post("/index/rebuild", tags=["gallery"])
def rebuild_index(request: Request, actor: CurrentActor) -> Json:
    """Rebuild the derived vector index from the database."""
    return get_fw(request).gallery.rebuild_index(actor)


# -- oversight ------------------------------------------------------------------------------
@router.get("/audit/events", tags=["audit"])
def audit_events(
    request: Request,
    actor: CurrentActor,
    action: Text | None = None,
    user: Text | None = None,
    case: Text | None = None,
    outcome: Text | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_seq: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[Json]:
    """Audit records, newest first, filtered (``since``/``until``: a time range, both
    inclusive); page with ``before_seq``."""
    return get_fw(request).oversight.events(
        actor,
        case_ref=case,
        since=since,
        until=until,
        action=action,
        user=user,
        outcome=outcome,
        before_seq=before_seq,
        limit=limit,
        newest_first=True,
    )


@router.get(
    "/audit/export",
    response_class=PlainTextResponse,
    responses={200: {"content": {"application/x-ndjson": {}, "text/csv": {}}}},
    tags=["audit"],
)
def audit_export(
    request: Request,
    actor: CurrentActor,
    format: Literal["jsonl", "csv"] = "jsonl",
    case: Text | None = None,
    since: datetime | None = None,
) -> Response:
    """The whole (or filtered) log as JSON lines or CSV, oldest first."""
    body = get_fw(request).oversight.export(actor, format, case_ref=case, since=since)
    media = "application/x-ndjson" if format == "jsonl" else "text/csv"
    name = f"facewarden-audit.{format}"
    return Response(
        body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


class AnchorIn(BaseModel):
    seq: int = Field(ge=0, le=MAX_ID)
    hash: Text = Field(min_length=64, max_length=64)


class VerifyAuditIn(BaseModel):
    anchors: list[AnchorIn] = []


@router.post("/audit/verify", tags=["audit"])
def audit_verify(request: Request, actor: CurrentActor, body: VerifyAuditIn | None = None) -> Json:
    """Walk the hash chain; with anchors (from ``/audit/head``), also detect truncation."""
    anchors = [a.model_dump() for a in body.anchors] if body else None
    return get_fw(request).oversight.verify(actor, anchors)


@router.get("/audit/head", tags=["audit"])
def audit_head(request: Request, actor: CurrentActor) -> Json:
    """The newest record's sequence number and hash: keep it outside the system."""
    return get_fw(request).oversight.head(actor)


@router.get("/report", tags=["audit"])
def report(request: Request, actor: CurrentActor) -> Json:
    """Records of processing: holdings per source and jurisdiction, searches, requests."""
    return get_fw(request).records.report(actor)


# -- users ----------------------------------------------------------------------------------
class UserIn(BaseModel):
    name: Text = Field(min_length=1, max_length=100)
    roles: list[Text] = Field(min_length=1)


@router.get("/users", tags=["users"])
def list_users(request: Request, actor: CurrentActor) -> list[Json]:
    """Users with roles, state, token expiry and last use."""
    return get_fw(request).users.list(actor)


@router.post("/users/{name}/disable", tags=["users"])
def disable_user(name: Text, request: Request, actor: CurrentActor) -> Json:
    """Disable a user: their token and console sessions stop working at once."""
    return get_fw(request).users.set_active(actor, name, False)


@router.post("/users/{name}/enable", tags=["users"])
def enable_user(name: Text, request: Request, actor: CurrentActor) -> Json:
    """Enable a disabled user again."""
    return get_fw(request).users.set_active(actor, name, True)


@router.post("/users/{name}/token", tags=["users"])
def rotate_token(name: Text, request: Request, actor: CurrentActor) -> Json:
    """Issue a new token (returned once); the old one and the user's console sessions end
    at once. Admins rotate anyone's token, every user their own."""
    return {"name": name, "token": get_fw(request).users.rotate(actor, name)}


@router.post("/users", status_code=201, tags=["users"])
def add_user(body: UserIn, request: Request, actor: CurrentActor) -> Json:
    """Create a user; the API token is returned once and stored only as a hash."""
    token = get_fw(request).users.add(actor, body.name, body.roles)
    return {"name": body.name, "roles": body.roles, "token": token}


@router.get("/notice", response_class=PlainTextResponse, tags=["public"])
def notice(request: Request) -> str:
    """The public notice (Markdown): who runs this system, why, and how to exercise rights."""
    return get_fw(request).records.notice()
