"""``search``: photo and video search, 1:1 verification and the crops a search returned."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, Request, Response, UploadFile

from facewarden.core.filters import SearchFilter
from facewarden.core.results import SearchResultOut, VideoSearchResultOut
from facewarden.core.schemas import VerifyResult
from facewarden.web.auth import CurrentActor, LimitedActor, get_fw
from facewarden.web.errors import error_responses
from facewarden.web.routes.common import (
    AS_USER,
    PREFIX,
    ContractRoute,
    IdPath,
    Json,
    Text,
    counted_search,
    read_upload,
    upload_to_file,
    with_crop_urls,
)

SourceFilterForm = Annotated[
    list[Text] | None, Form(description="Only candidates of this source (repeatable).")
]
JurisdictionFilterForm = Annotated[
    list[Text] | None,
    Form(description="Only candidates of this jurisdiction, e.g. DE (repeatable)."),
]
"""The search filters of the photo and the video search (``core.filters.SearchFilter``)."""

router = APIRouter(prefix=PREFIX, tags=["search"], responses=AS_USER, route_class=ContractRoute)

JPEG: dict[int | str, dict[str, Any]] = {200: {"content": {"image/jpeg": {}}}}


@router.post(
    "/search", response_model=SearchResultOut, responses=error_responses(404, 409, 413, 422)
)
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
    source: SourceFilterForm = None,
    jurisdiction: JurisdictionFilterForm = None,
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
            where=SearchFilter.of(source, jurisdiction),
        )
    return with_crop_urls(result.as_dict())


@router.post(
    "/search/video",
    response_model=VideoSearchResultOut,
    responses=error_responses(404, 409, 413, 422),
)
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
    source: SourceFilterForm = None,
    jurisdiction: JurisdictionFilterForm = None,
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
            where=SearchFilter.of(source, jurisdiction),
        )
    data = with_crop_urls(result.as_dict())
    for track, out in zip(result.tracks, data["tracks"], strict=True):
        thumb = track.thumbnail_jpeg
        out["thumbnail_jpeg"] = base64.b64encode(thumb).decode() if thumb else None
    return data


@router.post("/verify", response_model=VerifyResult, responses=error_responses(404, 413, 422))
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
    responses={**JPEG, **error_responses(404, 422)},
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
    responses={**JPEG, **error_responses(404, 422)},
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
    responses={**JPEG, **error_responses(404, 422)},
)
def source_photo(
    search_id: IdPath, face_id: IdPath, request: Request, actor: CurrentActor
) -> Response:
    """A candidate's full source photo with its box drawn (case-scoped, logged)."""
    data = get_fw(request).review.source_photo(actor, search_id, face_id)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})
