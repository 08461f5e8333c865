"""Every error leaves the server as JSON ``{"error": {"code", "message"}}``, never a trace."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from facewarden.core.errors import (
    AuditFailure,
    Busy,
    ConfigurationError,
    DecryptionFailed,
    FacewardenError,
    InvalidInput,
    MediaError,
    NoFaceFound,
    NotFound,
    NotInitialised,
    PermissionDenied,
    Refused,
    RetryLater,
    StorageFull,
    TemplateSpaceMismatch,
    Throttled,
)
from facewarden.core.faults import storage_failure

log = logging.getLogger("facewarden.web")

STATUS = [
    (NotFound, 404),
    (InvalidInput, 422),
    (MediaError, 422),
    (NoFaceFound, 422),
    (PermissionDenied, 403),
    (Refused, 403),
    (NotInitialised, 503),
    (AuditFailure, 503),
    (TemplateSpaceMismatch, 409),  # before its base class: a gallery/setting conflict
    (DecryptionFailed, 503),  # key_missing and wrong_key are NotInitialised: 503 as well
    (Busy, 503),
    (Throttled, 429),
    (StorageFull, 503),
    (ConfigurationError, 500),
]


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. not_found, rate_limited.")
    message: str = Field(description="What went wrong, for a person.")


class ErrorOut(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


ERRORS = {
    400: "Refused by the core (an error without a more specific status).",
    401: "No valid credential: send a bearer API token or log in to the console.",
    403: "Refused: the caller's roles, case assignment or a rule forbid it (or, for a "
    "console session, the CSRF header is missing).",
    404: "Not found, or not visible to the caller.",
    409: "Conflict: the gallery holds templates of another recipe than the server makes.",
    413: "Request body over FACEWARDEN_MAX_UPLOAD_BYTES.",
    422: "Invalid input: a parameter fails validation, or a file is unreadable or has no face.",
    429: "Rate limited (searches and look-ups, failed authentications, or too many upload jobs "
    "of one user); see Retry-After.",
    503: "Unavailable: not initialised, key missing, audit log or storage failing, or busy; "
    "see Retry-After.",
}


def error_responses(*statuses: int, not_json: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` declaring these error statuses with the error body.

    ``not_json``: for a route whose success body is not JSON (``response_class`` text):
    FastAPI would list the error body under the route's media type, so it is given as
    JSON explicitly (``ErrorOut`` is in the components through the other routes)."""
    if not_json:
        ref = {"$ref": f"#/components/schemas/{ErrorOut.__name__}"}
        return {
            status: {
                "description": ERRORS[status],
                "content": {"application/json": {"schema": ref}},
            }
            for status in statuses
        }
    return {status: {"model": ErrorOut, "description": ERRORS[status]} for status in statuses}


class ApiError(FacewardenError):
    """An error of the HTTP layer itself (authentication, CSRF, rate and size limits)."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.headers = headers or {}


def status_of(exc: FacewardenError) -> int:
    if isinstance(exc, ApiError):
        return exc.status
    return next((status for cls, status in STATUS if isinstance(exc, cls)), 400)


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def facewarden_error_response(exc: FacewardenError) -> JSONResponse:
    """The answer to a refusal or failure of the core (an audit write that failed because the
    disk is full is named as such)."""
    full = storage_failure(exc) if isinstance(exc, AuditFailure) else None
    if full is not None:
        return error_response(503, full.code, full.message, {"Retry-After": "60"})
    headers = exc.headers if isinstance(exc, ApiError) else None
    if isinstance(exc, RetryLater):
        headers = {"Retry-After": str(exc.retry_after)}
    return error_response(status_of(exc), exc.code, exc.message, headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(FacewardenError)
    async def _facewarden(_: Request, exc: FacewardenError) -> JSONResponse:
        return facewarden_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = (
            "; ".join(
                f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg')}"
                for e in exc.errors()
            )
            or "invalid request"
        )
        # FastAPI authenticates (the route's actor dependency) before it validates the
        # parameters, so the refusal is the caller's and is logged as theirs, like a refusal
        # by a rule: no request a user made goes unrecorded for being malformed.
        actor = getattr(request.state, "actor", None)
        if actor is not None:
            try:
                await run_in_threadpool(
                    request.app.state.fw.audit.record,
                    actor,
                    "request.invalid",
                    outcome="refused",
                    error=problems[:500],
                    details={"method": request.method, "path": request.url.path},
                )
            except AuditFailure as failure:  # answered as any other failed audit write
                return facewarden_error_response(failure)
        return error_response(422, "invalid_request", problems)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        full = storage_failure(exc)
        if full is not None:
            log.error("write failed, storage full: %s", exc)
            return error_response(503, full.code, full.message, {"Retry-After": "60"})
        log.exception("unexpected error", exc_info=exc)
        return error_response(500, "internal", "internal error; the server log has the details")
