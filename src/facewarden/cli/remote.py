"""The CLI as a client of ``facewarden serve``: ``facewarden --server URL`` (or
``FACEWARDEN_URL``) runs commands over the HTTP API with the caller's token, so
investigators and reviewers need no access to the database or the key.

The facade below has the methods the CLI's commands call on the core (same arguments, same
result objects), so each command prints the same output and JSON as in local mode; errors
come back as the same typed errors (same codes and exit codes). The token comes from
``FACEWARDEN_TOKEN`` or the token file for this server URL (``facewarden --server URL
login``).

Available remotely: ``search`` (photos), ``verify``, ``stats``, ``case show/list/candidates/
export/close``, ``confirm``, ``reject``, ``user list``. Other commands say so (exit 2).
"""

from __future__ import annotations

import os
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import httpx

from facewarden.cli.credentials import TOKEN_ENV, config_home, read_token_file
from facewarden.core.actors import Actor
from facewarden.core.errors import (
    FacewardenError,
    InvalidInput,
    NotFound,
    Refused,
    Unauthenticated,
)
from facewarden.core.filters import SearchFilter
from facewarden.core.schemas import Candidate, FaceMatches, SearchResult, VerifyResult
from facewarden.services.cases import CaseInfo
from facewarden.services.confirmations import CandidateState

URL_ENV = "FACEWARDEN_URL"


def server_token_file(url: str) -> Path:
    """This OS account's token file for a server (by its URL)."""
    import hashlib

    return config_home() / "tokens" / hashlib.sha256(url.rstrip("/").encode()).hexdigest()


def raise_for(response: httpx.Response) -> NoReturn:
    """The API's error as the typed error the core raised (same code, same exit code)."""
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = f"http_{response.status_code}", response.text[:200]
    status = response.status_code
    if status == 401:
        raise Unauthenticated(message, code=code)
    if status in (403, 429):
        raise Refused(message, code=code)
    if status == 404:
        raise NotFound(message, code=code)
    if status in (400, 413, 422):
        raise InvalidInput(message, code=code)
    raise FacewardenError(f"server answered {status}: {message}", code=code)


class Client:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.url + "/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=600,
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise FacewardenError(
                f"cannot reach {self.url}: {exc}", code="server_unreachable"
            ) from exc
        if response.status_code >= 400:
            raise_for(response)
        return response.json()

    def close(self) -> None:
        self.http.close()


def case_info(data: dict[str, Any]) -> CaseInfo:
    when = {
        k: datetime.fromisoformat(data[k]) if data[k] else None
        for k in ("opened_at", "expires_at", "closed_at")
    }
    return CaseInfo(**(data | when))


def search_result(data: dict[str, Any]) -> SearchResult:
    """The server's search JSON as the result the local mode prints (same contract)."""
    candidate_fields = {f.name for f in fields(Candidate)}
    faces = [
        FaceMatches(
            f["box"],
            f["quality"],
            [
                Candidate(**{k: v for k, v in c.items() if k in candidate_fields})
                for c in f["candidates"]
            ],
            expected_false_candidates=f.get("expected_false_candidates"),
            duplicates_collapsed=f.get("duplicates_collapsed", 0),
            quality_problems=f.get("quality_problems", []),
            searched=f.get("searched", True),
        )
        for f in data["faces"]
    ]
    return SearchResult(
        data["probe"],
        data["probe_sha256"],
        data["case"],
        data["threshold"],
        data["gallery_size"],
        data["model"],
        faces,
        data.get("audit_seq"),
        data.get("search_id"),
        notes=data.get("notes", []),
        threshold_policy=data.get("threshold_policy"),
        calibration=data.get("calibration"),
        detector=data.get("detector", ""),
    )


class _Search:
    def __init__(self, client: Client) -> None:
        self.client = client

    def search(
        self,
        actor: Actor,
        probe: bytes,
        *,
        case: str | None,
        probe_name: str = "probe",
        top_k: int | None = None,
        threshold: float | None = None,
        where: SearchFilter | None = None,
        allow_low_quality: bool = False,
    ) -> SearchResult:
        form: dict[str, Any] = {"case": case or ""} | _some(top_k=top_k, threshold=threshold)
        if allow_low_quality:
            form["allow_low_quality"] = "true"
        if where is not None and where.sources is not None:
            form["source"] = sorted(where.sources)
        if where is not None and where.jurisdictions is not None:
            form["jurisdiction"] = sorted(where.jurisdictions)
        data = self.client.call("POST", "/search", files={"image": (probe_name, probe)}, data=form)
        return search_result(data)

    def verify(
        self,
        actor: Actor,
        a: bytes,
        b: bytes,
        *,
        threshold: float | None = None,
        case: str | None = None,
    ) -> VerifyResult:
        form = _some(case=case, threshold=threshold)
        data = self.client.call("POST", "/verify", files={"a": ("a", a), "b": ("b", b)}, data=form)
        return VerifyResult(**data)


class _Cases:
    def __init__(self, client: Client) -> None:
        self.client = client

    def show(self, actor: Actor, ref: str) -> CaseInfo:
        return case_info(self.client.call("GET", f"/cases/{_seg(ref)}"))

    def list(self, actor: Actor) -> list[CaseInfo]:
        return [case_info(c) for c in self.client.call("GET", "/cases")]

    def close(self, actor: Actor, ref: str) -> CaseInfo:
        return case_info(self.client.call("POST", f"/cases/{_seg(ref)}/close"))


class _Confirmations:
    def __init__(self, client: Client) -> None:
        self.client = client

    def decide(
        self,
        actor: Actor,
        search_id: int,
        face_id: int,
        decision: str = "confirm",
        note: str | None = None,
    ) -> CandidateState:
        body = {"search_id": search_id, "face_id": face_id, "decision": decision, "note": note}
        return CandidateState(**self.client.call("POST", "/confirmations", json=body))

    def candidates(self, actor: Actor, ref: str) -> list[CandidateState]:
        rows = self.client.call("GET", f"/cases/{_seg(ref)}/candidates")
        return [CandidateState(**r) for r in rows]

    def export(
        self, actor: Actor, ref: str, *, search_id: int | None = None, face_id: int | None = None
    ) -> list[dict[str, Any]]:
        params = _some(search_id=search_id, face_id=face_id)
        return self.client.call("GET", f"/cases/{_seg(ref)}/export", params=params)


class _Users:
    def __init__(self, client: Client) -> None:
        self.client = client

    def list(self, actor: Actor) -> list[dict[str, Any]]:
        return self.client.call("GET", "/users")


class RemoteFacewarden:
    """The part of the core the CLI's commands use, over HTTP."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.search = _Search(client)
        self.cases = _Cases(client)
        self.confirmations = _Confirmations(client)
        self.users = _Users(client)

    def stats(self) -> dict[str, Any]:
        return self.client.call("GET", "/stats")

    def close(self) -> None:
        self.client.close()

    def __getattr__(self, name: str) -> NoReturn:
        raise InvalidInput(
            f"this command is not available with --server (it needs '{name}'): run it on "
            "the server's host, or through the console",
            code="not_remote",
        )


def remote_token(url: str) -> str:
    token = os.environ.get(TOKEN_ENV, "").strip() or read_token_file(server_token_file(url))
    if not token:
        raise Unauthenticated(
            f"no credential for {url}: set {TOKEN_ENV}, or store your token once with "
            f"'facewarden --server {url} login'"
        )
    return token


def open_remote(url: str, acting_as: str | None) -> tuple[RemoteFacewarden, Actor]:
    """The remote facade and the caller, as the server authenticates the token."""
    client = Client(url, remote_token(url))
    try:
        me = client.call("GET", "/me")
    except BaseException:
        client.close()
        raise
    actor = Actor(me["name"], frozenset(me["roles"]))
    if acting_as and acting_as != actor.name:
        client.close()
        raise Refused(
            f"--as {acting_as} refused: the credential belongs to {actor.name}; acting as "
            f"{acting_as} needs {acting_as}'s own token in {TOKEN_ENV}",
            code="not_your_token",
        )
    return RemoteFacewarden(client), actor


def check_token(url: str, token: str) -> Actor:
    """Whose token this is, as the server says (for ``login``)."""
    client = Client(url, token)
    try:
        me = client.call("GET", "/me")
    finally:
        client.close()
    return Actor(me["name"], frozenset(me["roles"]))


def _some(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _seg(value: str) -> str:
    """One URL path segment."""
    from urllib.parse import quote

    return quote(value, safe="")
