"""Every error leaves the server as JSON ``{"error": {"code", "message"}}``, never a trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from facewarden.core.errors import (
    AuditFailure,
    ConfigurationError,
    FacewardenError,
    InvalidInput,
    MediaError,
    NoFaceFound,
    NotFound,
    NotInitialised,
    PermissionDenied,
    Refused,
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
        headers = exc.headers if isinstance(exc, ApiError) else None
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
        log.exception("unexpected error", exc_info=exc)
        return error_response(500, "internal", "internal error; the server log has the details")
