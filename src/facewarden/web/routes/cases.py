"""``cases``: cases, their searches and candidates, review and two-person confirmation."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from facewarden.core.results import CaseSearchOut, IdentificationOut, ReviewSheetOut
from facewarden.web.auth import CurrentActor, get_fw
from facewarden.web.errors import error_responses
from facewarden.web.models import CandidateStateOut, CaseOut
from facewarden.web.routes.common import AS_USER, MAX_ID, PREFIX, ContractRoute, Json, Text

router = APIRouter(prefix=PREFIX, tags=["cases"], responses=AS_USER, route_class=ContractRoute)


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


@router.get("/cases", response_model=list[CaseOut])
def list_cases(request: Request, actor: CurrentActor) -> list[Json]:
    return [c.as_dict() for c in get_fw(request).cases.list(actor)]


@router.post(
    "/cases", status_code=201, response_model=CaseOut, responses=error_responses(404, 413, 422)
)
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


@router.get("/cases/{ref}", response_model=CaseOut, responses=error_responses(404, 422))
def show_case(ref: Text, request: Request, actor: CurrentActor) -> Json:
    return get_fw(request).cases.show(actor, ref).as_dict()


@router.post("/cases/{ref}/close", response_model=CaseOut, responses=error_responses(404, 422))
def close_case(ref: Text, request: Request, actor: CurrentActor) -> Json:
    """Close a case: no more searches; its kept probe templates are wiped."""
    return get_fw(request).cases.close(actor, ref).as_dict()


@router.post(
    "/cases/{ref}/members", response_model=CaseOut, responses=error_responses(404, 413, 422)
)
def assign(ref: Text, body: MemberIn, request: Request, actor: CurrentActor) -> Json:
    """Assign an investigator or a reviewer to the case (or remove one)."""
    return get_fw(request).cases.assign(actor, ref, body.user, remove=body.remove).as_dict()


@router.get(
    "/cases/{ref}/searches", response_model=list[CaseSearchOut], responses=error_responses(404, 422)
)
def case_searches(ref: Text, request: Request, actor: CurrentActor) -> list[Json]:
    """The case's searches with their candidates and each candidate's state."""
    return get_fw(request).confirmations.searches(actor, ref)


@router.get(
    "/cases/{ref}/candidates",
    response_model=list[CandidateStateOut],
    responses=error_responses(404, 422),
)
def case_candidates(ref: Text, request: Request, actor: CurrentActor) -> list[Json]:
    """Decided candidates with every decision (pending, identified, rejected)."""
    return [s.as_dict() for s in get_fw(request).confirmations.candidates(actor, ref)]


@router.get(
    "/cases/{ref}/review", response_model=ReviewSheetOut, responses=error_responses(404, 422)
)
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
            item["probe_crop_url"] = (
                f"{PREFIX}/searches/{sid}/probe-faces/{item['probe_face']}/crop"
            )
        if not item["erased"]:
            item["crop_url"] = f"{PREFIX}/searches/{sid}/faces/{item['face_id']}/crop"
            item["source_url"] = f"{PREFIX}/searches/{sid}/faces/{item['face_id']}/source"
    return sheet


@router.get(
    "/cases/{ref}/export",
    response_model=list[IdentificationOut],
    responses=error_responses(404, 422),
)
def case_export(
    ref: Text,
    request: Request,
    actor: CurrentActor,
    search_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    face_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> list[Json]:
    """Identifications (two-person confirmed) of the case with provenance."""
    return get_fw(request).confirmations.export(actor, ref, search_id=search_id, face_id=face_id)


@router.post(
    "/confirmations", response_model=CandidateStateOut, responses=error_responses(404, 413, 422)
)
def decide(body: DecisionIn, request: Request, actor: CurrentActor) -> Json:
    """Confirm or reject a candidate; identified once an assigned investigator and a
    different reviewer confirmed."""
    state = get_fw(request).confirmations.decide(
        actor, body.search_id, body.face_id, body.decision, body.note
    )
    return state.as_dict()
