"""What every command shares: the global options, the settings, and opening the core.

``open_app()`` and ``open_core()`` are context managers: the core (database engine, index,
model workers) is closed when the command's ``with`` block ends, also on an error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from facewarden.cli import output
from facewarden.cli.lazy import Lazy
from facewarden.core.actors import Actor
from facewarden.core.errors import InvalidInput

if TYPE_CHECKING:
    from facewarden.cli.credentials import cli_actor
    from facewarden.config import Settings
    from facewarden.services.app import Facewarden
else:  # imported on first use: ``facewarden --help`` loads no database, model or video code
    cli_actor = Lazy("facewarden.cli.credentials", "cli_actor")
    Settings = Lazy("facewarden.config", "Settings")
    Facewarden = Lazy("facewarden.services.app", "Facewarden")

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


class State:
    """The global options (``facewarden --data-dir ... --as ... --server ... COMMAND``)."""

    data_dir: Path | None = None
    acting_as: str | None = None
    server: str | None = None


state = State()


def settings(**overrides: Any) -> Settings:
    if state.data_dir is not None:
        overrides["data_dir"] = state.data_dir
    return Settings(**overrides)


@contextmanager
def open_core(config: Settings | None = None) -> Iterator[Facewarden]:
    """The core without an actor (commands that authenticate in their own way); closed
    when the block ends."""
    fw = Facewarden(config or settings())
    try:
        yield fw
    finally:
        fw.close()


@contextmanager
def open_app(**overrides: Any) -> Iterator[tuple[Facewarden, Actor]]:
    """The core and the actor, authenticated by API token (see ``cli.credentials``); with
    ``--server``, a client of that server with the same methods (see ``cli.remote``).
    Closed when the block ends, also on an error."""
    fw: Facewarden
    if state.server:
        from facewarden.cli.remote import open_remote

        remote, actor = open_remote(state.server, state.acting_as)
        # The remote facade has the part of the core's interface the commands use over HTTP;
        # anything else is refused with a clear error (RemoteFacewarden.__getattr__).
        fw = cast("Facewarden", remote)
    else:
        fw = Facewarden(settings(**overrides))
        try:
            actor, _ = cli_actor(fw, state.acting_as)
        except BaseException:
            fw.close()
            raise
    try:
        yield fw, actor
    finally:
        fw.close()


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from exc


def progress_bar(quiet: bool) -> Progress:
    """A progress bar on stderr (off with --json and in non-interactive CI)."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=output.err,
        disable=quiet or (not output.err.is_terminal and "CI" in os.environ),
    )
