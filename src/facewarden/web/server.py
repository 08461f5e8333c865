"""The HTTP server: API, console, health, metrics and docs in one FastAPI application."""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from facewarden import __version__
from facewarden.config import Settings
from facewarden.core.actors import Actor
from facewarden.services.app import Facewarden
from facewarden.services.jobs import IngestJobs
from facewarden.services.probes import ProbePool
from facewarden.web import api, console, errors
from facewarden.web.auth import RateLimiter
from facewarden.web.metrics import Metrics, MetricsMiddleware
from facewarden.web.middleware import BodyLimit, SecurityHeaders

log = logging.getLogger("facewarden.web")

RETENTION_ACTOR = Actor("facewarden-server (scheduled retention)", frozenset({"dpo"}))


def session_secret(settings: Settings) -> str:
    """The console's cookie-signing key: a 0600 file in the data directory."""
    path = settings.session_key_file
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


class RetentionTimer:
    """Every ``minutes``, in a daemon thread: the index reconciled with the database, the
    retention run, then the physical purge of whatever any deletion since the last purge left
    on disk (both logged like any run)."""

    def __init__(self, fw: Facewarden, minutes: int) -> None:
        self.fw, self.minutes = fw, minutes
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="retention", daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(self.minutes * 60):
            try:
                self.tick()
            except Exception:  # keep the timer alive; the error is logged
                log.exception("scheduled retention run failed")

    def tick(self) -> dict[str, object]:
        """One round: reconcile the index with the database (what other processes added or
        deleted), expire, then purge the bytes of every deletion not yet purged."""
        synced = self.fw.sync_index()
        if any(synced.values()):
            log.info("index reconciled with the database: %s", synced)
        receipt = self.fw.gallery.retention_run(RETENTION_ACTOR)
        log.info("retention run: %s", receipt)
        purged = self.fw.gallery.purge_index(RETENTION_ACTOR, only_if_pending=True)
        if purged:
            log.info("purge of deleted templates: %s", purged)
        return {"index": synced, "retention": receipt, "purge": purged}


class AnchorTimer:
    """Writes an audit anchor (to the anchor file and this server's log) whenever records
    were appended and the last anchor is older than ``audit_anchor_seconds``: at least
    hourly by default, even when no request arrives to append another record."""

    def __init__(self, fw: Facewarden) -> None:
        self.fw = fw
        self.every_s = min(fw.settings.audit_anchor_seconds, 300.0)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="audit-anchors", daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(self.every_s):
            try:
                self.fw.audit.anchor_if_due()
            except OSError as exc:  # the anchor file is missing or unwritable
                log.error("audit anchor not written: %s", exc)
            except Exception:  # keep the timer alive; the error is logged
                log.exception("audit anchor failed")


def _log_anchors() -> None:
    """Anchors go to the server log too (a second copy outside the database)."""
    audit_log = logging.getLogger("facewarden.audit")
    if not audit_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s %(message)s"))
        audit_log.addHandler(handler)
        audit_log.setLevel(logging.INFO)


def create_app(settings: Settings | None = None, fw: Facewarden | None = None) -> FastAPI:
    settings = settings or Settings()
    fw = fw or Facewarden(settings)
    timer = RetentionTimer(fw, settings.retention_interval_minutes)
    anchors = AnchorTimer(fw)
    _log_anchors()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        fw.index  # noqa: B018 - reconcile the index with the database before serving
        # Made here, in the server's main thread: the workers die with it (workers.py).
        fw.probes = ProbePool(settings, fw._pipeline)
        if settings.retention_interval_minutes:
            timer.thread.start()
        anchors.thread.start()
        yield
        timer.stop.set()
        anchors.stop.set()
        try:
            fw.audit.anchor_now()
        except OSError as exc:
            log.error("audit anchor not written: %s", exc)
        app.state.jobs.shutdown()
        fw.close()

    app = FastAPI(
        title="facewarden",
        version=__version__,
        summary="Accountable face search over lawfully held media.",
        description=(
            "Every call acts as a user (bearer API token or console session). Searches need "
            "an open case the caller is assigned to; every call that touches personal data "
            "is written to the tamper-evident audit log. Errors are "
            '`{"error": {"code", "message"}}`.'
        ),
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.fw = fw
    app.state.jobs = IngestJobs(
        fw.settings, fw.guard, fw.sessions, fw.sources, fw.ingest, fw.users.current
    )
    app.state.limiter = RateLimiter(settings.search_rate_limit)
    app.state.metrics = Metrics(fw)
    errors.install(app)

    # Outermost first: size limit, security headers, metrics, then sessions.
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_secret(settings),
        session_cookie="facewarden_session",
        max_age=int(settings.session_hours * 3600),
        same_site="strict",
        https_only=settings.secure_cookies,
    )
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes)

    app.include_router(api.router)
    app.include_router(console.router)
    static = Path(str(files("facewarden.web") / "static"))
    app.mount("/static", StaticFiles(directory=static), name="static")
    docs_assets = Path(str(files("fastapi_offline") / "static"))
    app.mount("/static-docs", StaticFiles(directory=docs_assets), name="static-docs")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="facewarden API",
            swagger_js_url="/static-docs/swagger-ui-bundle.js",
            swagger_css_url="/static-docs/swagger-ui.css",
            swagger_favicon_url="/static-docs/favicon.png",
        )

    return app
