"""``serve``: the HTTP API and the web console."""

from __future__ import annotations

from typing import Annotated

import typer

from facewarden.cli.context import settings


def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (FACEWARDEN_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (FACEWARDEN_PORT).")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the HTTP API and the web console (one process; API docs at /docs)."""
    import uvicorn

    from facewarden.web.server import create_app

    s = settings()
    web = create_app(s)
    uvicorn.run(
        web,
        host=host or s.host,
        port=port or s.port,
        log_level=log_level,
        server_header=False,
        proxy_headers=False,
    )
