"""``public``: what answers without a credential (the notice, health and metrics)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from facewarden.web.auth import get_fw
from facewarden.web.errors import error_responses
from facewarden.web.models import HealthOut
from facewarden.web.routes.common import PREFIX

router = APIRouter(tags=["public"])


@router.get(
    f"{PREFIX}/notice",
    response_class=PlainTextResponse,
    responses=error_responses(503, not_json=True),
)
def notice(request: Request) -> str:
    """The public notice (Markdown): who runs this system, why, and how to exercise rights."""
    return get_fw(request).records.notice()


@router.get("/healthz", response_model=HealthOut)
def healthz(request: Request) -> dict[str, object]:
    """Liveness and readiness: the database answers and the index is loaded."""
    fw = get_fw(request)
    with fw.sessions() as session:
        session.execute(text("SELECT 1"))
    return {"status": "ok", "database": fw.engine.dialect.name, "index_size": len(fw.index)}


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(request: Request) -> Response:
    """Prometheus metrics (no personal data)."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
