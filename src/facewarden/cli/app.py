"""The ``facewarden`` command line: a thin layer over the core service (``Facewarden``).

This module only builds the root application and registers the commands, which live in
``cli/commands/`` by group (shared options and ``open_app()`` in ``cli/context.py``).
To add a command, write it in the module of its group and name it in ``COMMANDS`` (a
top-level command) or decorate it with the group's ``typer.Typer`` (a sub-command)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from facewarden.cli import output
from facewarden.cli.commands import (
    audit,
    cases,
    gallery,
    keys,
    search,
    serve,
    setup,
    sources,
    subjects,
    users,
)
from facewarden.cli.context import state
from facewarden.cli.evaluate import eval_app
from facewarden.core.errors import ConfigurationError, FacewardenError, InvalidInput
from facewarden.core.faults import storage_failure

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="facewarden: accountable face search over your own, lawfully held media.",
)

COMMANDS: list[Callable[..., Any]] = [
    setup.init,
    sources.ingest,
    search.search,
    search.redact,
    search.verify,
    gallery.delete,
    gallery.stats,
    cases.confirm,
    cases.reject,
    users.login,
    users.logout,
    gallery.purge,
    audit.notice,
    audit.report,
    keys.backup,
    keys.restore,
    setup.demo,
    serve.serve,
]
"""Top-level commands (``facewarden NAME``), in the order ``--help`` lists them."""

GROUPS: list[tuple[str, typer.Typer]] = [
    ("source", sources.source_app),
    ("case", cases.case_app),
    ("index", gallery.index_app),
    ("models", setup.models_app),
    ("audit", audit.audit_app),
    ("user", users.user_app),
    ("media", gallery.media_app),
    ("retention", gallery.retention_app),
    ("subject", subjects.subject_app),
    ("key", keys.key_app),
    ("eval", eval_app),
]
"""Sub-command groups (``facewarden NAME COMMAND``)."""

for _command in COMMANDS:
    app.command()(_command)
for _name, _group in GROUPS:
    app.add_typer(_group, name=_name)


@app.callback()
def _global(
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Data directory (env FACEWARDEN_DATA_DIR).")
    ] = None,
    acting_as: Annotated[
        str | None,
        typer.Option(
            "--as",
            help="Refuse unless the credential (FACEWARDEN_TOKEN or the stored token) is "
            "this user's.",
        ),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            envvar="FACEWARDEN_URL",
            help="Run the command on this facewarden server (its HTTP API) with your token.",
        ),
    ] = None,
) -> None:
    state.data_dir, state.acting_as, state.server = data_dir, acting_as, server


def settings_error(exc: Exception) -> FacewardenError | None:
    """A setting with a bad value (FACEWARDEN_* in the environment or the .env file), named
    as the operator sets it: ``error [configuration]``, exit 2."""
    from pydantic import ValidationError  # (loaded already: Settings failed to validate)

    if not isinstance(exc, ValidationError) or exc.title != "Settings":
        return None
    parts = []
    for e in exc.errors():
        name = "FACEWARDEN_" + "_".join(str(p) for p in e.get("loc", ())).upper()
        parts.append(f"{name}={e.get('input')!r}: {e.get('msg', 'invalid')}")
    return ConfigurationError("bad setting: " + "; ".join(parts))


def main() -> None:
    try:
        app()
    except Exception as exc:  # every error ends as one line, never a traceback
        # A full disk is named as such, also under the audit failure it causes.
        error = storage_failure(exc) or (exc if isinstance(exc, FacewardenError) else None)
        if error is None:
            error = settings_error(exc)
        if error is None and isinstance(exc, OSError) and exc.filename:
            # A path given on the command line that cannot be read or written.
            error = InvalidInput(f"{exc.strerror}: {exc.filename}", code="bad_path")
        if error is None:
            if os.environ.get("FACEWARDEN_DEBUG"):
                raise
            error = FacewardenError(
                f"{type(exc).__name__}: {exc} (set FACEWARDEN_DEBUG=1 for the traceback)",
                code="internal",
            )
        output.err.print(
            f"[red]error[/] {escape(f'[{error.code}]')}: {escape(error.message)}", highlight=False
        )
        sys.exit(error.exit_code)


if __name__ == "__main__":
    main()
