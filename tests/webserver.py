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
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from facewarden.core.actors import ROLES, Actor
from facewarden.core.pipeline import FacePipeline
from facewarden.services.app import Facewarden

from conftest import GALLERY, Seed, add_source, build_seed, make_settings, open_case

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


def _build_server_gallery(
    data_dir: Path, database_url: str | None, pipeline: FacePipeline
) -> dict[str, str]:
    """The gallery every ``running_server`` starts from: its users' tokens."""
    settings = make_settings(data_dir, database_url)
    fw, admin_token = Facewarden.init(settings, admin_name="admin", pipeline=pipeline)
    try:
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
    finally:
        fw.close()
    return tokens


_server_seed: tuple[Seed, dict[str, str]] | None = None
_server_seed_cleanup = ExitStack()


def server_seed(pipeline: FacePipeline) -> tuple[Seed, dict[str, str]]:
    """The servers' gallery, built once per test session (on first use; removed by
    ``close_server_seed`` from conftest's ``pytest_sessionfinish``), and its tokens."""
    global _server_seed
    if _server_seed is None:
        root = Path(tempfile.mkdtemp(prefix="facewarden-test-server-seed-"))
        _server_seed_cleanup.callback(shutil.rmtree, root, ignore_errors=True)
        tokens: dict[str, str] = {}

        def build(data_dir: Path, database_url: str | None) -> None:
            tokens.update(_build_server_gallery(data_dir, database_url, pipeline))

        seed = _server_seed_cleanup.enter_context(build_seed(root / "data", build))
        _server_seed = (seed, tokens)
    return _server_seed


def close_server_seed() -> None:
    global _server_seed
    _server_seed = None
    _server_seed_cleanup.close()


@contextmanager
def prepared_seed(
    data_dir: Path, pipeline: FacePipeline, prepare: Callable[[Facewarden, Actor], None]
) -> Iterator[tuple[Seed, dict[str, str]]]:
    """The servers' gallery with what ``prepare(fw, admin)`` adds, kept as a seed of its own
    (for tests that start several servers on the same prepared gallery: pass it to
    ``running_server``), and its tokens."""
    seed, tokens = server_seed(pipeline)
    with seed.copy(data_dir) as database_url:
        fw = Facewarden(make_settings(data_dir, database_url), pipeline)
        try:
            prepare(fw, fw.actor(name="admin"))
        finally:
            fw.close()
        name = database_url.split("?", 1)[0].rsplit("/", 1)[1] if database_url else None
        yield Seed(data_dir, name), tokens


@contextmanager
def running_server(
    root: Path,
    pipeline: FacePipeline,
    prepare: Callable[[Facewarden, Actor], None] | None = None,
    *,
    seed: tuple[Seed, dict[str, str]] | None = None,
    **env: str,
) -> Iterator[Server]:
    """``facewarden serve`` over a copy of the servers' gallery (the five identities, source
    "press", CASE-1 with ines, rita and only-investigator, and the users of ``Server.tokens``;
    built once per session), or of ``seed`` (from ``prepared_seed``). ``prepare(fw, admin)``
    adds what a test module needs to its copy before the server starts (more sources, images
    with a manifest, cases)."""
    base, tokens = seed or server_seed(pipeline)
    data_dir = root / "data"
    try:
        with base.copy(data_dir) as database_url:
            if prepare is not None:
                fw = Facewarden(make_settings(data_dir, database_url), pipeline)
                try:
                    prepare(fw, fw.actor(name="admin"))
                finally:
                    fw.close()
            with serving(
                data_dir, dict(tokens), root / "server.log", database_url, seconds=60, **env
            ) as server:
                yield server
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
