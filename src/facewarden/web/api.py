"""The JSON API (``/api/v1``): one router per OpenAPI tag in ``web/routes/``, assembled here.

Each route turns HTTP into one service call with the caller's ``Actor``; the services decide
what the actor may do, log it and enforce the rules. Nothing here checks a role itself.
To add a route, put it in the router of its tag (``routes/<tag>.py``); a new tag is a new
module, named in ``ROUTERS``.
"""

from __future__ import annotations

from fastapi import APIRouter

from facewarden.web.routes import (
    audit,
    cases,
    gallery,
    ingest,
    public,
    search,
    session,
    sources,
    subjects,
    users,
)

ROUTERS: list[APIRouter] = [
    session.router,
    gallery.router,
    sources.router,
    ingest.router,
    search.router,
    subjects.router,
    cases.router,
    audit.router,
    users.router,
    public.router,
]

router = APIRouter()
for _router in ROUTERS:
    router.include_router(_router)
