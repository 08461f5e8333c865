"""Every command closes the core it opened (``open_app()`` is a context manager): after a
command, also one that failed half-way, no database connection of it is left open."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool
from typer.testing import CliRunner

from facewarden.cli.app import app
from facewarden.config import Settings
from facewarden.core.errors import InvalidInput, NotFound
from facewarden.services.app import Facewarden


def open_connections(settings: Settings) -> Callable[[], int]:
    """How many connections to this data directory's database are open right now: file
    descriptors of this process on the SQLite file, or sessions PostgreSQL counts."""
    if settings.database_url is None:
        db = str(settings.data_dir / "facewarden.db")

        def sqlite_fds() -> int:
            fds = Path("/proc/self/fd")
            links = []
            for fd in fds.iterdir():
                try:
                    links.append(os.readlink(fd))
                except OSError:
                    continue
            return sum(link == db for link in links)

        return sqlite_fds
    engine = create_engine(settings.database_url, poolclass=NullPool)
    name = engine.url.database

    def pg_sessions() -> int:
        with engine.connect() as conn:
            return conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": name},
            ).scalar_one()

    return pg_sessions


@pytest.fixture
def cli(settings: Settings):
    fw, token = Facewarden.init(settings, admin_name="admin")
    fw.close()
    env = {"FACEWARDEN_TOKEN": token, "FACEWARDEN_WORKERS": "1"}
    if settings.database_url:
        env["FACEWARDEN_DATABASE_URL"] = settings.database_url
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, ["--data-dir", str(settings.data_dir), *args], env=env)

    return run


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
def test_commands_close_the_core_also_when_they_fail(cli, settings):
    connections = open_connections(settings)
    assert connections() == 0

    ok = cli("case", "list", "--json")
    assert ok.exit_code == 0, ok.output
    assert connections() == 0

    # Refused by the core after the core was opened; the result keeps the exception and
    # its traceback (and so the command's frame) alive: only the context manager closes it.
    missing = cli("case", "show", "NO-SUCH-CASE")
    assert isinstance(missing.exception, NotFound)
    assert connections() == 0

    bad = cli("source", "add", "press", "--jurisdiction", "FR")
    assert isinstance(bad.exception, InvalidInput)
    assert connections() == 0

    # A command that opens the core without an actor (the notice) closes it too.
    notice = cli("notice")
    assert notice.exit_code == 0, notice.output
    assert connections() == 0
