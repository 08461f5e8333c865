"""A real ``facewarden serve`` process on 127.0.0.1 over a gallery of the fixture faces.

The gallery and users are created in process through the core; the server is a separate
process started from the installed command, talked to over real HTTP.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from facewarden.core.actors import ROLES, Actor
from facewarden.services.app import Facewarden

from conftest import GALLERY, PG_ADMIN_URL, _pg_database, add_source, make_settings, open_case

ROLE_USERS = {role: f"only-{role}" for role in ROLES}
"""One user per role, holding just that role."""


@dataclass
class Server:
    url: str
    data_dir: Path
    tokens: dict[str, str]
    """User name -> API token: 'admin' (init's single operator), 'ines' (investigator on
    CASE-1), 'rita' (reviewer on CASE-1), 'dora' (dpo), and ``ROLE_USERS``."""
    log: Path
    clients: list[httpx.Client] = field(default_factory=list)
    database_url: str | None = None

    def client(self, user: str | None = "admin", **kw) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        headers |= kw.pop("headers", {})
        c = httpx.Client(base_url=self.url, headers=headers, timeout=120, **kw)
        self.clients.append(c)
        return c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def facewarden_command() -> list[str]:
    exe = Path(sys.executable).with_name("facewarden")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "facewarden.cli.app"]


@contextmanager
def serving(
    data_dir: Path,
    tokens: dict[str, str],
    log: Path,
    database_url: str | None,
    *,
    seconds: float,
    **env: str,
) -> Iterator[Server]:
    """``facewarden serve`` on a free loopback port for an existing data directory (and
    database), once it answers ``/healthz`` (within ``seconds``); stopped on exit."""
    port = free_port()
    environ = os.environ | {
        "FACEWARDEN_DATA_DIR": str(data_dir),
        "FACEWARDEN_WORKERS": "1",
        "FACEWARDEN_RETENTION_INTERVAL_MINUTES": "0",
        **env,
    }
    if database_url:
        environ["FACEWARDEN_DATABASE_URL"] = database_url
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*facewarden_command(), "serve", "--port", str(port), "--log-level", "warning"],
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", data_dir, tokens, log, database_url=database_url)
    try:
        deadline = time.monotonic() + seconds
        while True:
            try:
                if httpx.get(server.url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log.read_text()}")
            time.sleep(0.2)
        yield server
    finally:
        for c in server.clients:
            c.close()
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def running_server(
    root: Path,
    pipeline,
    prepare: Callable[[Facewarden, Actor], None] | None = None,
    **env: str,
) -> Iterator[Server]:
    """``prepare(fw, admin)`` adds what a test module needs to the gallery before the
    server starts (more sources, images with a manifest, cases)."""
    db = _pg_database() if PG_ADMIN_URL else None
    database_url = next(db) if db else None
    data_dir = root / "data"
    settings = make_settings(data_dir, database_url)
    fw, admin_token = Facewarden.init(settings, admin_name="admin", pipeline=pipeline)
    admin = fw.actor(name="admin")
    tokens = {"admin": admin_token}
    for name, roles in {
        "ines": ["investigator"],
        "rita": ["reviewer"],
        "dora": ["dpo"],
        **{user: [role] for role, user in ROLE_USERS.items()},
    }.items():
        tokens[name] = fw.users.add(admin, name, roles)
    add_source(fw, admin)
    summary = fw.ingest.run(admin, [GALLERY], "press")
    assert summary.faces == 5, summary
    open_case(fw, admin, investigators=["ines", "rita", ROLE_USERS["investigator"]])
    if prepare is not None:
        prepare(fw, admin)
    fw.close()

    try:
        with serving(
            data_dir, tokens, root / "server.log", database_url, seconds=60, **env
        ) as server:
            yield server
    finally:
        if db:
            next(db, None)
        shutil.rmtree(data_dir, ignore_errors=True)
