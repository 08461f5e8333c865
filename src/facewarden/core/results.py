"""The JSON shapes of the results and receipts the services produce, as the HTTP API sends
them: the API's ``response_model``s, hence its OpenAPI contract (the web-only envelopes, and
the models of results defined in ``services/``, are in ``web/models.py``; the error body in
``web/errors.py``).

A result the services return as a dataclass (``core/schemas.py``, ``services/``) is
described once, by that dataclass: its model here is ``derived`` from it, field for field
(type and docstring), and declares only what the answer sends otherwise: a field its
``as_dict`` computes (``no_candidate_within_threshold``) or the HTTP API adds (``crop_url``),
a field sent in another form (a nested result, a time as text), one left out. A receipt the
services build as a dict is described here field by field; a stable part is typed, a
free-form one (audit details, a stored receipt, container facts) is a ``dict[str, Any]``
field. Undeclared fields are allowed (``Wire``: a field a service adds does not fail its
answer; the contract test finds it). Times are ISO 8601 strings as the services write them.
A field that only some answers carry is optional (default None); the answers without it leave
it out (``ContractRoute`` sends the service's dict, not the model).

Kept apart from ``core/schemas.py`` so that ``facewarden --help`` does not load pydantic.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import typing
from collections.abc import Callable
from copy import copy
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, create_model

from facewarden.core.schemas import (
    Candidate,
    FaceMatches,
    IngestSummary,
    Quality,
    SearchResult,
    Skipped,
    TimelineEntry,
    TrackMatches,
    VideoSearchResult,
)


class Wire(BaseModel):
    """Base of the API's response models."""

    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True)


M = TypeVar("M", bound=Wire)


def attribute_docs(cls: type) -> dict[str, str]:
    """The docstrings written under the fields of a class (as pydantic reads them from a
    model with ``use_attribute_docstrings``)."""
    try:
        (node,) = ast.parse(textwrap.dedent(inspect.getsource(cls))).body
    except (OSError, TypeError, ValueError, SyntaxError):  # no (matching) source: none
        return {}
    if not isinstance(node, ast.ClassDef):
        return {}
    docs = {}
    for field, after in zip(node.body, node.body[1:], strict=False):
        if (
            isinstance(field, ast.AnnAssign)
            and isinstance(field.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[field.target.id] = inspect.cleandoc(after.value.value)
    return docs


def derived(
    source: type, *, drop: tuple[str, ...] = (), rename: dict[str, str] | None = None
) -> Callable[[type[M]], type[M]]:
    """Make the decorated model the response model of the dataclass ``source``: every field of
    ``source`` (less ``drop``; sent under another name in ``rename``), in its order, with its
    type and docstring, required (``as_dict`` sends every field), then the fields the class
    declares itself. A field the class declares replaces the dataclass's field of that name
    (another type, a default); the others follow. The class keeps its name and docstring."""
    if not dataclasses.is_dataclass(source):
        raise TypeError(f"{source!r} is not a dataclass")
    unknown = (set(drop) | set(rename or ())) - {f.name for f in dataclasses.fields(source)}
    if unknown:
        raise TypeError(f"{source.__name__} has no field {', '.join(sorted(unknown))}")
    hints = typing.get_type_hints(source)
    docs = attribute_docs(source)

    def build(model: type[M]) -> type[M]:
        own = model.model_fields
        fields: dict[str, Any] = {}
        for f in dataclasses.fields(source):
            if f.name in drop:
                continue
            name = (rename or {}).get(f.name, f.name)
            mine = own.get(name)
            if mine is None:
                fields[name] = (hints[f.name], Field(description=docs.get(f.name)))
            else:  # sent otherwise: documented as the dataclass documents it, unless redone
                mine = copy(mine)
                mine.description = mine.description or docs.get(f.name)
                fields[name] = (mine.annotation, mine)
        fields |= {
            name: (info.annotation, info) for name, info in own.items() if name not in fields
        }
        out = create_model(
            model.__name__,
            __base__=Wire,
            __doc__=model.__doc__,
            __module__=model.__module__,
            **fields,
        )
        return cast(type[M], out)

    return build


@derived(Quality)
class QualityOut(Wire):
    """``Quality.as_dict``: the measured quality of a face."""


@derived(Candidate)
class CandidateOut(Wire):
    """``Candidate.as_dict`` (a gallery face a search returned), with its crop's URL."""

    crop_url: str | None = None
    """Set by the HTTP API: the crop of this face as this search returned it."""


class ThresholdPolicyOut(Wire):
    """How a search's threshold was chosen: ``fixed`` (by the request, the case or the
    settings) or ``fpir`` (from the case's target false-positive identification rate)."""

    policy: str
    set_by: str | None = None
    target_fpir: float | None = None
    gallery_size: int | None = None
    expected_false_candidates: float | None = None
    within_target: bool | None = None
    calibration: str | None = None
    case_target_fpir: float | None = None
    case_threshold: float | None = None


@derived(FaceMatches)
class FaceMatchesOut(Wire):
    """``FaceMatches.as_dict``: one probe face and its candidates."""

    quality: QualityOut
    candidates: list[CandidateOut]
    no_candidate_within_threshold: bool
    probe_crop_url: str | None = None
    """Set by the HTTP API for a searched face: its kept crop."""


@derived(SearchResult)
class SearchResultOut(Wire):
    """``SearchResult.as_dict``: a photo search."""

    faces: list[FaceMatchesOut]
    threshold_policy: ThresholdPolicyOut | None


@derived(TrackMatches)
class TrackMatchesOut(Wire):
    """``TrackMatches.as_dict``: one face track of a probe video and its candidates."""

    quality: QualityOut
    candidates: list[CandidateOut]
    thumbnail_jpeg: str | None = None
    """Set by the HTTP API: the best face's crop as base64 JPEG."""
    no_candidate_within_threshold: bool
    probe_crop_url: str | None = None


@derived(VideoSearchResult)
class VideoSearchResultOut(Wire):
    """``VideoSearchResult.as_dict``: a video search."""

    tracks: list[TrackMatchesOut]
    timeline: list[TimelineEntry]
    partial: bool
    """Whether only part of the video was searched (the reason is ``partial_reason``)."""
    threshold_policy: ThresholdPolicyOut | None
    partial_reason: str | None
    unmatched_tracks: list[int]


@derived(Skipped)
class SkippedOut(Wire):
    """A file an ingest skipped (or stored only in part), and why."""


@derived(IngestSummary)
class IngestSummaryOut(Wire):
    """``IngestSummary.as_dict``."""

    skipped: list[SkippedOut]
    partial: list[SkippedOut]
    subjects: dict[str, Any] | None = None
    images_per_s: float
    faces_per_s: float


class DecisionOut(Wire):
    user: str
    roles: list[str]
    decision: str
    note: str | None
    at: str
    audit_seq: int | None


class CaseSearchHitOut(Wire):
    probe_face: int
    face_id: int
    rank: int
    distance: float
    status: str


class CaseSearchOut(Wire):
    """A case's search with its candidates and each candidate's state."""

    search_id: int
    probe: str
    probe_sha256: str
    searched_by: str
    searched_at: str
    audit_seq: int | None
    faces: int
    candidates: list[CaseSearchHitOut]


class IdentificationOut(Wire):
    """A two-person confirmed identification with its provenance (case export)."""

    search_id: int
    face_id: int
    probe_sha256: str
    searched_at: str
    searched_by: str
    rank: int
    distance: float
    media_id: int | None
    media_path: str | None
    media_sha256: str | None
    source: str | None
    jurisdiction: str | None
    lawful_basis: str | None
    confirmed_by: list[str]


class ReviewDecisionOut(Wire):
    user: str
    decision: str
    note: str | None
    decided_at: str


class ReviewItemOut(Wire):
    """A candidate beside its probe face on the review sheet."""

    search_id: int
    probe: str
    searched_by: str
    searched_at: str
    probe_face: int
    probe_kept: bool
    probe_quality: dict[str, Any] | None
    """As stored when the probe was searched (the fields of ``QualityOut``)."""
    probe_quality_problems: list[str]
    probe_time_s: float | None
    face_id: int
    rank: int
    distance: float
    erased: bool
    status: str
    decisions: list[ReviewDecisionOut]
    candidate_quality: dict[str, Any] | None = None
    """As stored at ingest (the fields of ``QualityOut``)."""
    media_id: int | None = None
    media_path: str | None = None
    source: str | None = None
    jurisdiction: str | None = None
    lawful_basis: str | None = None
    ingested_at: str | None = None
    restricted: bool | None = None
    time_s: float | None = None
    box: list[int] | None = None
    probe_crop_url: str | None = None
    crop_url: str | None = None
    source_url: str | None = None
    """The three URLs are set by the HTTP API (a kept probe face; a face not erased)."""


class ReviewSheetOut(Wire):
    """One page of a case's candidates for review."""

    case: str
    status: str
    access: str
    page: int
    per_page: int
    total: int
    pages: int
    items: list[ReviewItemOut]


class DeletionCountsOut(Wire):
    """What a deletion removed."""

    media: int
    faces: int
    crops: int


class DeletionReceiptOut(DeletionCountsOut):
    """The receipt of a purge or a retention run."""

    action: str
    scope: dict[str, Any]
    """What was deleted: the jurisdiction or source, or the retention cut-off and wipes."""
    by: str
    completed_at: str
    media_digest: str
    audit_seq: int


class IndexRebuildOut(Wire):
    faces: int


class HeldSearchOut(Wire):
    case: str
    search_id: int
    searched_at: str
    searched_by: str
    rank: int
    distance: float
    audit_seq: int | None


class HeldFaceOut(Wire):
    """A held face of a data subject with its provenance and the searches that returned it."""

    face_id: int
    distance: float | None = None
    """Absent for a face found by subject reference (no comparison was made)."""
    box: list[int]
    media_id: int
    media_path: str
    media_sha256: str
    source: str
    lawful_basis: str
    purpose: str
    jurisdiction: str
    ingested_at: str
    retained_until: str
    restricted: bool
    searches: list[HeldSearchOut]
    proposal: str | None = None
    """Erasure preview only: ``erase`` (within the strict threshold) or ``review``."""


class AccessReportOut(Wire):
    """A data subject's access report (by selfie, or by subject reference)."""

    kind: str
    reference: str | None
    selfie_sha256: str | None = None
    threshold: float | None = None
    subject: str | None = None
    source: str | None = None
    fields: dict[str, Any] | None = None
    """By reference: the subject's metadata as the source system recorded it."""
    restricted: bool | None = None
    model: str
    received_at: str
    handled_by: str
    review_note: str
    matches: list[HeldFaceOut]
    completed_at: str
    request_id: int
    audit_seq: int


class ReviewCandidateOut(Wire):
    face_id: int
    distance: float
    media_path: str
    source: str


class ErasureReceiptOut(Wire):
    """The receipt of an erasure (by selfie, by subject reference, or a DPO's review
    decision on an erasure's review candidates)."""

    request_id: int
    parent_request_id: int | None = None
    action: str
    reference: str | None
    subject: str | None = None
    source: str | None = None
    selfie_sha256: str | None = None
    selfies_sha256: list[str] | None = None
    threshold: float | None = None
    review_threshold: float | None = None
    face_ids: list[int]
    released: list[int] | None = None
    still_pending: list[int] | None = None
    distances: dict[str, float] | None = None
    faces: int
    crops: int
    media_records_deleted: int
    media_touched: int
    media_digest: str
    review: list[ReviewCandidateOut] | None = None
    collateral: dict[str, Any] | None = None
    subject_record_deleted: bool | None = None
    suppressed: bool | None = None
    suppression_templates: int | None = None
    by: str
    received_at: str
    audit_seq: int
    completed_at: str
    residue: dict[str, Any] | None = None
    receipt_sha256: str


class RestrictionOut(Wire):
    """Media of a subject excluded from search (or the exclusion lifted)."""

    subject: str
    source: str | None
    media: list[int]
    restricted: bool


class SubjectRequestOut(Wire):
    """A rights request with its dates and time to completion."""

    id: int
    kind: str
    reference: str | None
    handled_by: str | None
    received_at: str
    completed_at: str | None
    seconds_to_complete: float | None
    faces: int | None
    suppression: bool
    audit_seq: int | None
    pending_review: list[int]
    bytes_purged_at: str | None = None
    """Erasures only: when the erased templates left the vector index's files too (None:
    not yet)."""
    purge_audit_seq: int | None = None


class ReceiptEntryOut(Wire):
    """One receipt of the rights services (access, erasure, erasure review, restriction and
    its lifting) or of a physical purge: its counts and the full receipt."""

    id: str
    request_id: int | None
    kind: str
    reference: str | None
    subject: str | None
    at: str
    by: str | None
    audit_seq: int
    audit_hash: str
    """The hash of the entry's audit record (check it against an exported log)."""
    counts: dict[str, int]
    receipt_sha256: str | None = None
    receipt: dict[str, Any]
    """The receipt as stored (its fields depend on the kind)."""


class AuditEntryOut(Wire):
    """One audit record: the stable fields, and ``details`` as the action recorded them."""

    seq: int
    ts: str
    actor: str
    role: str | None
    action: str
    case_ref: str | None
    legal_basis: str | None
    purpose: str | None
    probe_hash: str | None
    gallery_size: int | None
    model_id: str | None
    threshold: float | None
    details: dict[str, Any] | None
    outcome: str
    error: str | None
    prev_hash: str
    hash: str


class AuditHeadOut(Wire):
    """The newest record's sequence number and hash (an anchor)."""

    seq: int
    hash: str
    ts: str | None


class ChainCheckOut(Wire):
    """The hash chain walked (and the anchors checked)."""

    ok: bool
    records: int
    first_bad_seq: int | None
    reason: str | None
    anchors: int


class SourceHoldingOut(Wire):
    source: str
    jurisdiction: str
    lawful_basis: str
    retention_days: float
    media: int
    faces: int


class HoldingCountsOut(Wire):
    media: int
    faces: int


class CaseRecordOut(Wire):
    case: str
    status: str
    legal_basis: str
    investigators: list[str]
    searches: int
    search_quota: int
    identifications: int
    rejected: int


class ProcessingReportOut(Wire):
    """Records of processing: holdings, cases, identifications, rights requests."""

    sources: list[SourceHoldingOut]
    jurisdictions: dict[str, HoldingCountsOut]
    cases: list[CaseRecordOut]
    identifications: int
    rights_requests: list[SubjectRequestOut]
    audit_head: AuditHeadOut | None


class StatsOut(Wire):
    """Counts of sources, media, faces and the index."""

    sources: int
    media: int
    faces: int
    searchable_faces: int
    index_size: int
    index_backend: str
    model: str
    detector: str
    database: str


class UserOut(Wire):
    name: str
    roles: list[str]
    active: bool
    token_issued_at: str | None
    token_expires_at: str | None
    token_expired: bool
    last_used_at: str | None


class UserStateOut(Wire):
    name: str
    active: bool
    sessions_ended: int
