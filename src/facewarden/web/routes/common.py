"""What the routers share: input types, upload helpers and the declared error responses."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import Path, Request, UploadFile
from pydantic import AfterValidator

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
