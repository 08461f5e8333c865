"""``subjects``: data subjects' rights (access, erasure and its review, restriction) and
any held face's crop for the data-protection officer."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from facewarden.core.errors import InvalidInput
from facewarden.core.limits import RECEIPTS_PAGE, RECEIPTS_PAGE_MAX, REFERENCE_CHARS, ReceiptKind
from facewarden.core.results import (
    AccessReportOut,
    ErasureReceiptOut,
    HeldFaceOut,
    ReceiptEntryOut,
    RestrictionOut,
    SubjectRequestOut,
)
from facewarden.web.auth import CurrentActor, LimitedActor, get_fw
from facewarden.web.errors import error_responses
from facewarden.web.routes.common import (
    AS_USER,
    MAX_ID,
    PREFIX,
    ContractRoute,
    IdPath,
    Json,
    Text,
    read_upload,
)

router = APIRouter(prefix=PREFIX, tags=["subjects"], responses=AS_USER, route_class=ContractRoute)


class ReviewDecision(BaseModel):
    erase: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(
        default_factory=list, max_length=10_000
    )
    release: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(
        default_factory=list, max_length=10_000
    )


class SubjectRefIn(BaseModel):
    subject: Text = Field(min_length=1, max_length=200)
    source: Text | None = Field(None, max_length=200)


class SubjectEraseIn(SubjectRefIn):
    confirm: bool = Field(description="Must be true: erasure cannot be undone.")


class SubjectRestrictIn(SubjectRefIn):
    restricted: bool = True


@router.get(
    "/faces/{face_id}/crop",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, **error_responses(404, 422)},
)
def face_crop(face_id: IdPath, request: Request, actor: CurrentActor) -> Response:
    """Any held face's crop (data-protection officer: access and erasure review)."""
    data = get_fw(request).gallery.crop(actor, face_id)
    return Response(data, media_type="image/jpeg")


@router.post(
    "/subjects/access",
    response_model=AccessReportOut,
    responses={
        200: {"content": {"application/json": {}, "text/html": {}}},
        **error_responses(409, 413, 422),
    },
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
        return HTMLResponse(get_fw(request).subjects.report_html(report))
    return report


@router.post(
    "/subjects/erase/preview",
    response_model=list[HeldFaceOut],
    responses=error_responses(409, 413, 422),
)
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


@router.post(
    "/subjects/erase", response_model=ErasureReceiptOut, responses=error_responses(409, 413, 422)
)
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


@router.post(
    "/subjects/erasures/{request_id}/review",
    response_model=ErasureReceiptOut,
    responses=error_responses(404, 413, 422),
)
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


@router.get("/subjects/requests", response_model=list[SubjectRequestOut])
def subject_requests(request: Request, actor: CurrentActor) -> list[Json]:
    """Access and erasure requests with their receipts and time to completion."""
    return get_fw(request).subjects.requests(actor)


class ReceiptsPage(BaseModel):
    """One page of the receipts list, newest first."""

    receipts: list[ReceiptEntryOut]
    next: int | None = Field(
        description="before_seq of the next (older) page; null on the last page."
    )


@router.get("/subjects/receipts", response_model=ReceiptsPage, responses=error_responses(422))
def subject_receipts(
    request: Request,
    actor: CurrentActor,
    limit: Annotated[int, Query(ge=1, le=RECEIPTS_PAGE_MAX)] = RECEIPTS_PAGE,
    before_seq: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    kind: ReceiptKind | None = None,
    reference: Annotated[Text | None, Query(max_length=REFERENCE_CHARS)] = None,
) -> Json:
    """Access, erasure, restriction and physical purge receipts, newest first, each with its
    counts (faces erased, collateral, residue; deletions a purge covered) and the full
    receipt; page with ``before_seq`` (the ``next`` of the previous page)."""
    return get_fw(request).subjects.receipts(
        actor, limit=limit, before_seq=before_seq, kind=kind, reference=reference
    )


@router.post(
    "/subjects/by-reference/access",
    response_model=AccessReportOut,
    responses=error_responses(404, 413, 422),
)
def subject_access_by_reference(body: SubjectRefIn, request: Request, actor: LimitedActor) -> Json:
    """Everything held about a subject of the source system (ingest manifest reference)."""
    return get_fw(request).subject_records.access(actor, body.subject, source=body.source)


@router.post(
    "/subjects/by-reference/erase",
    response_model=ErasureReceiptOut,
    responses=error_responses(404, 413, 422),
)
def subject_erase_by_reference(body: SubjectEraseIn, request: Request, actor: LimitedActor) -> Json:
    """Erase every face linked to the subject and the subject record; returns the receipt."""
    if not body.confirm:
        raise InvalidInput("erasure cannot be undone: send confirm=true")
    return get_fw(request).subject_records.erase(actor, body.subject, source=body.source)


@router.post(
    "/subjects/by-reference/restrict",
    response_model=RestrictionOut,
    responses=error_responses(404, 413, 422),
)
def subject_restrict_by_reference(
    body: SubjectRestrictIn, request: Request, actor: LimitedActor
) -> Json:
    """Exclude every media of the subject from search (or lift that)."""
    return get_fw(request).subject_records.restrict(
        actor, body.subject, source=body.source, restricted=body.restricted
    )
