"""Every error leaves the server as JSON ``{"error": {"code", "message"}}``, never a trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from facewarden.adapters.crypto import DecryptionFailed
from facewarden.adapters.storage.faults import storage_failure
from facewarden.core.errors import (
    AuditFailure,
    Busy,
    ConfigurationError,
    FacewardenError,
    InvalidInput,
    MediaError,
    NoFaceFound,
    NotFound,
    NotInitialised,
    PermissionDenied,
    Refused,
    StorageFull,
    TemplateSpaceMismatch,
)

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
    (StorageFull, 503),
    (ConfigurationError, 500),
]


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
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(FacewardenError)
    async def _facewarden(_: Request, exc: FacewardenError) -> JSONResponse:
        full = storage_failure(exc) if isinstance(exc, AuditFailure) else None
        if full is not None:
            return error_response(503, full.code, full.message, {"Retry-After": "60"})
        headers = exc.headers if isinstance(exc, ApiError) else None
        if isinstance(exc, Busy):
            headers = {"Retry-After": str(exc.retry_after)}
        return error_response(status_of(exc), exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg')}"
            for e in exc.errors()
        )
        return error_response(422, "invalid_request", problems or "invalid request")

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
