"""The web console: server-rendered pages whose scripts call the JSON API.

Log-in is by API token; the session cookie is signed, HTTP-only and SameSite=Strict, and
every state-changing call carries the session's CSRF token (the log-in form one of its own).
Which page a user sees in the menu follows the roles; what they may do is decided by the core.
"""

from __future__ import annotations

import secrets
from importlib.resources import files
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from facewarden.core.actors import Actor
from facewarden.core.errors import Unauthenticated
from facewarden.web.auth import get_fw, start_session
from facewarden.web.errors import ApiError

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(str(files("facewarden.web") / "templates")))

PAGES = [
    ("search", "Search", ("investigator", "reviewer")),
    ("cases", "Cases", ("investigator", "reviewer", "admin", "auditor", "dpo")),
    ("review", "Review", ("investigator", "reviewer", "auditor", "dpo")),
    ("ingest", "Ingest", ("operator",)),
    ("dpo", "Data protection", ("dpo",)),
    ("audit", "Audit", ("auditor", "admin", "dpo")),
    ("users", "Users", ("admin",)),
]

PAGE_ROLES = {slug: roles for slug, _, roles in PAGES}


def session_actor(request: Request) -> Actor | None:
    sid = request.session.get("sid")
    if not sid:
        return None
    try:
        return get_fw(request).users.session_actor(sid)
    except Unauthenticated:
        request.session.clear()
        return None


def pages_for(actor: Actor) -> list[tuple[str, str]]:
    return [(slug, title) for slug, title, roles in PAGES if actor.has(*roles)]


@router.get("/")
def home(request: Request) -> Response:
    actor = session_actor(request)
    if actor is None:
        return RedirectResponse("/login", 303)
    pages = pages_for(actor)
    return RedirectResponse(f"/{pages[0][0]}" if pages else "/account", 303)


@router.get("/login")
def login_form(
    request: Request, error: str | None = None, status: int = 401, headers: dict | None = None
) -> HTMLResponse:
    request.session["login_csrf"] = secrets.token_urlsafe(32)
    return templates.TemplateResponse(
        request,
        "login.html",
        {"csrf": request.session["login_csrf"], "error": error},
        status_code=status if error else 200,
        headers=headers,
    )


LOGIN_ERRORS = {
    "rate_limited": "Too many failed log-ins: wait a moment and try again.",
    "token_expired": "This API token has expired: ask an admin to rotate it.",
    "user_disabled": "This user is disabled.",
}


@router.post("/login")
def login(
    request: Request,
    token: Annotated[str, Form()],
    csrf: Annotated[str, Form()],
    user: Annotated[str | None, Form()] = None,
) -> Response:
    expected = request.session.pop("login_csrf", "")
    if not expected or not secrets.compare_digest(csrf, expected):
        return login_form(request, "The form expired; please try again.")
    try:
        start_session(request, get_fw(request), token, user)
    except ApiError as exc:
        message = LOGIN_ERRORS.get(exc.code, "Unknown or revoked API token.")
        return login_form(request, message, exc.status, exc.headers)
    return RedirectResponse("/", 303)


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form()]) -> Response:
    """End the session on the server (its cookie, even a copy, no longer works)."""
    expected = request.session.get("csrf", "")
    if expected and secrets.compare_digest(csrf, expected):
        sid = request.session.get("sid")
        if sid:
            get_fw(request).users.end_session(sid)
        request.session.clear()
    return RedirectResponse("/login", 303)


def page(slug: str):
    def render(request: Request) -> Response:
        actor = session_actor(request)
        if actor is None:
            return RedirectResponse("/login", 303)
        allowed = PAGE_ROLES.get(slug)
        settings = get_fw(request).settings
        return templates.TemplateResponse(
            request,
            f"{slug}.html",
            {
                "page": slug,
                "user": actor.name,
                "roles": sorted(actor.roles),
                "pages": pages_for(actor),
                "csrf": request.session.get("csrf", ""),
                "allowed": allowed is None or actor.has(*allowed),
                "threshold": settings.threshold,
                "top_k": settings.top_k,
                "threshold_policy": settings.threshold_policy,
                "target_fpir": settings.target_fpir,
            },
        )

    render.__name__ = f"page_{slug}"
    return render


for _slug in [p[0] for p in PAGES] + ["account"]:
    router.add_api_route(f"/{_slug}", page(_slug), methods=["GET"], response_class=HTMLResponse)
