"""What the routers share: input types, upload helpers and the declared error responses."""

from __future__ import annotations

import functools
import inspect
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import Path, Request, Response, UploadFile
from fastapi.datastructures import DefaultPlaceholder
from fastapi.routing import APIRoute
from pydantic import AfterValidator, TypeAdapter, ValidationError

from facewarden.core.errors import InvalidInput, Refused
from facewarden.web.auth import get_fw
from facewarden.web.errors import error_responses

PREFIX = "/api/v1"
Json = dict[str, Any]
MAX_ID = 2**31 - 1
"""Ids are INTEGER columns (32-bit on PostgreSQL): anything larger is a 422, not a
database error."""

AS_USER = error_responses(401, 403, 429, 503)
"""Every call made as a user: no valid credential (401), refused by a rule or a missing CSRF
header (403), too many failed authentications (429), the audit log or storage failing (503).
Each router declares these; routes add what else applies (404, 409, 413, 422)."""


log = logging.getLogger("facewarden.web")
MISMATCH = "answer does not match its response model:"
_ANY: TypeAdapter[Any] = TypeAdapter(Any)
_CHECKED: set[Callable[..., Any]] = set()


class ContractRoute(APIRoute):
    """A JSON route whose answer is checked against its ``response_model`` and sent as the
    service produced it.

    The model is the operation's contract in OpenAPI, and every answer is validated against
    it: a mismatch is logged as an error of the server (the answer still goes out, as the API
    never answers 500 for its own bookkeeping; tests/test_web_response_models.py fails on
    it). The body is the service's own dict,
    serialised as FastAPI serialises an untyped answer: the same fields in the same order
    with the same numbers, so the models add no default, drop no field and turn no int into
    a float (the models keep fields they do not declare; tests/test_web_response_models.py
    finds any). An endpoint that returns a ``Response`` (the HTML access report) sends it."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        model = kwargs.get("response_model")
        if model is not None and not isinstance(model, DefaultPlaceholder):
            endpoint = _checked(endpoint, model, kwargs.get("status_code") or 200)
        super().__init__(path, endpoint, **kwargs)


def _checked(endpoint: Callable[..., Any], model: Any, status_code: int) -> Callable[..., Any]:
    if endpoint in _CHECKED:  # a router included in another passes its routes on
        return endpoint
    if inspect.iscoroutinefunction(endpoint):
        raise TypeError(f"{endpoint.__name__}: ContractRoute wraps plain (def) endpoints only")
    adapter: TypeAdapter[Any] = TypeAdapter(model)

    @functools.wraps(endpoint)
    def answer(*args: Any, **kwargs: Any) -> Any:
        content = endpoint(*args, **kwargs)
        if isinstance(content, Response):
            return content
        try:
            adapter.validate_python(content)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5]
            )
            log.error("%s: %s %s", endpoint.__name__, MISMATCH, problems)
        return Response(_ANY.dump_json(content), status_code, media_type="application/json")

    _CHECKED.add(answer)
    return answer


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
            probe_face["probe_crop_url"] = f"{PREFIX}/searches/{sid}/probe-faces/{n}/crop"
        for c in probe_face["candidates"]:
            c["crop_url"] = f"{PREFIX}/searches/{sid}/faces/{c['face_id']}/crop"
    return result
